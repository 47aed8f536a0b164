//! The pure rules of invariant 2 ("sign state never goes backwards"): no
//! I/O, so every case is a table-driven unit test.

use std::path::{Path, PathBuf};

use super::{SignStateError, Watermark};

/// Refuse any move to a lower watermark. Equal is allowed (re-reading or
/// re-writing the same state); a lower one gets the specific regression kind.
pub fn check_advance(current: Watermark, proposed: Watermark) -> Result<(), SignStateError> {
    if proposed >= current {
        Ok(())
    } else if proposed.height < current.height {
        Err(SignStateError::HeightRegression { current, proposed })
    } else if proposed.round < current.round {
        Err(SignStateError::RoundRegression { current, proposed })
    } else {
        Err(SignStateError::StepRegression { current, proposed })
    }
}

/// Where a known watermark came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatermarkSource {
    /// The local `priv_validator_state.json`.
    LocalFile(PathBuf),
    /// A sign-state backup.
    Backup {
        store: String,
        name: String,
        sequence: u64,
    },
    /// This host's high-water record (`<vault dir>/high-water.json`): the
    /// highest watermark it has signed or backed up.
    HighWaterRecord(PathBuf),
}

impl std::fmt::Display for WatermarkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatermarkSource::LocalFile(path) => write!(f, "local file {}", path.display()),
            WatermarkSource::Backup {
                store,
                name,
                sequence,
            } => write!(f, "backup {name} (sequence {sequence}) in store {store}"),
            WatermarkSource::HighWaterRecord(path) => {
                write!(f, "this host's high-water record {}", path.display())
            }
        }
    }
}

/// A watermark and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KnownWatermark {
    pub watermark: Watermark,
    pub source: WatermarkSource,
}

impl std::fmt::Display for KnownWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.watermark, self.source)
    }
}

/// What reading the local `priv_validator_state.json` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalState {
    /// No file.
    Missing,
    /// A file that cannot be read or parsed: never start on it.
    Unreadable(SignStateError),
    /// A valid state.
    Present(Watermark),
}

/// Whether gaiad may start, per the start rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// Start. `watermark` is the highest known watermark (the local one: it
    /// is at least every backup), `None` for a fresh validator with no
    /// state and no backup.
    Start { watermark: Option<KnownWatermark> },
    /// Do not start. `reason` is for the operator: it names the watermarks,
    /// their sources, and what to do. `local` is the local state if it was
    /// readable; `highest` the highest known watermark, `None` only when the
    /// local file is unreadable and there is no backup at all.
    Refuse {
        reason: String,
        local: Option<KnownWatermark>,
        highest: Option<KnownWatermark>,
    },
}

const RESTORE_ADVICE: &str =
    "run `palisade-supervisor restore-state` to restore the backup's state, or investigate";

/// What to do when `highest` is above the local state: restore a backup,
/// or, when only the host's own record knows that watermark, find out why
/// the state file went back.
fn advice(highest: &WatermarkSource) -> &'static str {
    match highest {
        WatermarkSource::HighWaterRecord(_) => {
            "the state file went back (a restored snapshot or disk?); run `palisade-supervisor \
             restore-state` if a backup at or above it exists, otherwise see \
             docs/backup-format.md \"High-water record\" before doing anything else"
        }
        _ => RESTORE_ADVICE,
    }
}

/// The start rule. The highest known watermark is the maximum over the
/// local state (if readable) and every backup.
///
/// - Start when the local state is at least every backup, or when there is
///   no local state and no backup at all (a fresh validator).
/// - Refuse when a backup is strictly higher than the local state.
/// - Refuse when the local state is missing or unreadable and any backup
///   exists: a lost or corrupt state file next to a backup is exactly how
///   a validator double-signs (the Neutron incident).
/// - Refuse when the local state is unreadable and there is no backup:
///   never start on a corrupt state file.
pub fn start_decision(
    local: &LocalState,
    local_path: &Path,
    backups: &[KnownWatermark],
) -> StartDecision {
    let highest_backup = backups.iter().max_by_key(|backup| backup.watermark);
    let local_source = WatermarkSource::LocalFile(local_path.to_path_buf());
    match (local, highest_backup) {
        (LocalState::Present(watermark), backup) => {
            let local = KnownWatermark {
                watermark: *watermark,
                source: local_source,
            };
            match backup {
                Some(backup) if backup.watermark > local.watermark => StartDecision::Refuse {
                    reason: format!(
                        "refusing to start: {} is at {}, but {} is higher at {}; gaiad could sign \
                         again what was already signed; {}",
                        local.source,
                        local.watermark,
                        backup.source,
                        backup.watermark,
                        advice(&backup.source)
                    ),
                    local: Some(local),
                    highest: Some(backup.clone()),
                },
                _ => StartDecision::Start {
                    watermark: Some(local),
                },
            }
        }
        (LocalState::Missing, None) => StartDecision::Start { watermark: None },
        (LocalState::Missing, Some(backup)) => StartDecision::Refuse {
            reason: format!(
                "refusing to start: {local_source} is missing, but {} is at {}; without the \
                 state gaiad would sign again from height 0 and could double-sign; {}",
                backup.source,
                backup.watermark,
                advice(&backup.source)
            ),
            local: None,
            highest: Some(backup.clone()),
        },
        (LocalState::Unreadable(error), Some(backup)) => StartDecision::Refuse {
            reason: format!(
                "refusing to start: {local_source} is unreadable ({error}), and {} is at {}; \
                 never start on a corrupt state file; {}",
                backup.source,
                backup.watermark,
                advice(&backup.source)
            ),
            local: None,
            highest: Some(backup.clone()),
        },
        (LocalState::Unreadable(error), None) => StartDecision::Refuse {
            reason: format!(
                "refusing to start: {local_source} is unreadable ({error}) and no backup is \
                 known, so the highest signed watermark is unknown; never start on a corrupt \
                 state file; investigate, and write a state at or above the last height this \
                 validator signed"
            ),
            local: None,
            highest: None,
        },
    }
}

/// A backup's sign state, for [`signbytes_conflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUpSignature {
    pub known: KnownWatermark,
    /// `signbytes` of the bundled state (empty when it has none).
    pub signbytes: Vec<u8>,
    /// The host that wrote the bundle.
    pub host_id: String,
}

/// Evidence of two signers: the local state and a backup at the same
/// height, round and step with different sign bytes. One signer at one
/// HRS signs one vote (CometBFT's FilePV re-signs only a vote that
/// differs by its timestamp, and then keeps the first sign bytes:
/// `privval/file.go` `signVote`), so two different sign bytes mean two
/// signatures, or a tampered file. Either way nobody may start before a
/// human has looked. States without sign bytes (nothing signed yet, or a
/// state the supervisor raised) prove nothing and are skipped.
pub fn signbytes_conflict(
    local_path: &Path,
    local: &super::SignState,
    backups: &[BackedUpSignature],
) -> Option<String> {
    if local.signbytes.is_empty() {
        return None;
    }
    let conflict = backups.iter().find(|backup| {
        backup.known.watermark == local.watermark()
            && !backup.signbytes.is_empty()
            && backup.signbytes != local.signbytes
    })?;
    Some(format!(
        "refusing to start: {} and {} (written by host {}) are both at {} but hold different \
         sign bytes: two different votes or proposals were signed at that height, round and step \
         (a second signer with this key), or one file was altered; stop every other host that \
         holds this key, compare the two states, and see docs/backup-format.md \"Conflicting sign \
         bytes\" before starting",
        WatermarkSource::LocalFile(local_path.to_path_buf()),
        conflict.known.source,
        conflict.host_id,
        conflict.known.watermark
    ))
}

/// Whether `candidate` (a backup) may be restored over the local state.
///
/// Allowed only if the candidate is the highest known watermark (never
/// write anything lower) and it is above the local state, or the local
/// state is missing or unreadable.
///
/// Errors: [`SignStateError::BelowKnownWatermark`] when the candidate is
/// lower than `highest_known`; [`SignStateError::HighestKnownStale`] when
/// it is higher (the caller's highest was computed without it); a
/// regression kind when the local state is above the candidate;
/// [`SignStateError::RestoreNotNeeded`] when it is equal.
pub fn restore_decision(
    current_local: &LocalState,
    candidate: &KnownWatermark,
    highest_known: Watermark,
) -> Result<(), SignStateError> {
    if candidate.watermark < highest_known {
        return Err(SignStateError::BelowKnownWatermark {
            proposed: candidate.watermark,
            known: highest_known,
            origin: candidate.source.to_string(),
        });
    }
    if candidate.watermark > highest_known {
        return Err(SignStateError::HighestKnownStale {
            candidate: candidate.watermark,
            known: highest_known,
        });
    }
    match current_local {
        LocalState::Missing | LocalState::Unreadable(_) => Ok(()),
        LocalState::Present(local) => {
            check_advance(*local, candidate.watermark)?;
            if candidate.watermark == *local {
                return Err(SignStateError::RestoreNotNeeded {
                    local: *local,
                    candidate: candidate.watermark,
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Step;
    use super::*;

    fn mark(height: u64, round: u32, step: Step) -> Watermark {
        Watermark {
            height,
            round,
            step,
        }
    }

    fn backup(name: &str, sequence: u64, watermark: Watermark) -> KnownWatermark {
        KnownWatermark {
            watermark,
            source: WatermarkSource::Backup {
                store: "bastion-a".into(),
                name: name.into(),
                sequence,
            },
        }
    }

    const PATH: &str = "/home/gaia/.gaia/data/priv_validator_state.json";

    fn local(watermark: Watermark) -> KnownWatermark {
        KnownWatermark {
            watermark,
            source: WatermarkSource::LocalFile(PATH.into()),
        }
    }

    #[test]
    fn ordering_is_height_then_round_then_step() {
        let ordered = [
            mark(0, 0, Step::None),
            mark(1, 0, Step::None),
            mark(1, 0, Step::Propose),
            mark(1, 0, Step::Prevote),
            mark(1, 0, Step::Precommit),
            mark(1, 1, Step::None),
            mark(1, 7, Step::Precommit),
            mark(2, 0, Step::None),
            mark(10, 0, Step::None),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
        assert!(mark(2, 0, Step::None) > mark(1, 99, Step::Precommit));
        assert_eq!(
            mark(5, 2, Step::Prevote).to_string(),
            "height 5 round 2 step 2"
        );
    }

    #[test]
    fn check_advance_table() {
        use SignStateError as E;
        let current = mark(10, 2, Step::Prevote);
        type Expect = Option<fn(Watermark, Watermark) -> E>;
        let height: Expect = Some(|current, proposed| E::HeightRegression { current, proposed });
        let round: Expect = Some(|current, proposed| E::RoundRegression { current, proposed });
        let step: Expect = Some(|current, proposed| E::StepRegression { current, proposed });
        let cases: &[(&str, Watermark, Expect)] = &[
            ("lower height", mark(9, 5, Step::Precommit), height),
            ("lower height, round 0", mark(9, 0, Step::None), height),
            (
                "same height, lower round",
                mark(10, 1, Step::Precommit),
                round,
            ),
            (
                "same height and round, lower step",
                mark(10, 2, Step::Propose),
                step,
            ),
            (
                "same height and round, step none",
                mark(10, 2, Step::None),
                step,
            ),
            ("equal", current, None),
            ("higher step", mark(10, 2, Step::Precommit), None),
            ("higher round, lower step", mark(10, 3, Step::None), None),
            (
                "higher height, lower round and step",
                mark(11, 0, Step::None),
                None,
            ),
        ];
        for (name, proposed, expected) in cases {
            let result = check_advance(current, *proposed);
            match expected {
                None => assert_eq!(result, Ok(()), "{name}"),
                Some(make) => {
                    let error = result.expect_err(name);
                    assert_eq!(error, make(current, *proposed), "{name}");
                    let message = error.to_string();
                    assert!(
                        message.contains(&current.to_string())
                            && message.contains(&proposed.to_string()),
                        "{name}: message must name both watermarks: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn source_display() {
        assert_eq!(
            WatermarkSource::LocalFile("/x/priv_validator_state.json".into()).to_string(),
            "local file /x/priv_validator_state.json"
        );
        assert_eq!(
            WatermarkSource::Backup {
                store: "s3-eu".into(),
                name: "state-000042".into(),
                sequence: 42
            }
            .to_string(),
            "backup state-000042 (sequence 42) in store s3-eu"
        );
    }

    #[test]
    fn start_decision_table() {
        let low = mark(100, 0, Step::Precommit);
        let mid = mark(100, 1, Step::Prevote);
        let high = mark(101, 0, Step::None);
        let unreadable = LocalState::Unreadable(SignStateError::Empty);

        enum Want {
            Start(Option<KnownWatermark>),
            Refuse {
                local: Option<KnownWatermark>,
                highest: Option<KnownWatermark>,
                mentions: &'static [&'static str],
            },
        }
        let cases: Vec<(&str, LocalState, Vec<KnownWatermark>, Want)> = vec![
            (
                "no local, no backup: fresh validator",
                LocalState::Missing,
                vec![],
                Want::Start(None),
            ),
            (
                "local only",
                LocalState::Present(mid),
                vec![],
                Want::Start(Some(local(mid))),
            ),
            (
                "local == backup",
                LocalState::Present(mid),
                vec![backup("b1", 1, mid)],
                Want::Start(Some(local(mid))),
            ),
            (
                "local > backup",
                LocalState::Present(high),
                vec![backup("b1", 1, low), backup("b2", 2, mid)],
                Want::Start(Some(local(high))),
            ),
            (
                "local < backup",
                LocalState::Present(low),
                vec![backup("b1", 1, mid)],
                Want::Refuse {
                    local: Some(local(low)),
                    highest: Some(backup("b1", 1, mid)),
                    mentions: &["height 100 round 0 step 3", "height 100 round 1 step 2"],
                },
            ),
            (
                "local missing + backup (the Neutron incident)",
                LocalState::Missing,
                vec![backup("b1", 1, low)],
                Want::Refuse {
                    local: None,
                    highest: Some(backup("b1", 1, low)),
                    mentions: &["is missing", "height 100 round 0 step 3"],
                },
            ),
            (
                "local unreadable + backup",
                unreadable.clone(),
                vec![backup("b1", 1, low)],
                Want::Refuse {
                    local: None,
                    highest: Some(backup("b1", 1, low)),
                    mentions: &["unreadable", "empty", "height 100 round 0 step 3"],
                },
            ),
            (
                "local unreadable, no backup",
                unreadable.clone(),
                vec![],
                Want::Refuse {
                    local: None,
                    highest: None,
                    mentions: &["unreadable", "no backup", "corrupt", "investigate"],
                },
            ),
            (
                "several backups, highest chosen",
                LocalState::Present(low),
                vec![
                    backup("b1", 1, low),
                    backup("b3", 3, high),
                    backup("b2", 2, mid),
                ],
                Want::Refuse {
                    local: Some(local(low)),
                    highest: Some(backup("b3", 3, high)),
                    mentions: &["backup b3 (sequence 3) in store bastion-a", "height 101"],
                },
            ),
        ];
        for (name, local_state, backups, want) in cases {
            let decision = start_decision(&local_state, Path::new(PATH), &backups);
            match (want, decision) {
                (Want::Start(expected), StartDecision::Start { watermark }) => {
                    assert_eq!(watermark, expected, "{name}")
                }
                (
                    Want::Refuse {
                        local: want_local,
                        highest: want_highest,
                        mentions,
                    },
                    StartDecision::Refuse {
                        reason,
                        local,
                        highest,
                    },
                ) => {
                    assert_eq!(local, want_local, "{name}");
                    assert_eq!(highest, want_highest, "{name}");
                    assert!(
                        reason.contains(&format!("local file {PATH}")),
                        "{name}: reason must name the local file: {reason}"
                    );
                    if let Some(highest) = &highest {
                        assert!(
                            reason.contains(&highest.source.to_string())
                                && reason.contains(&highest.watermark.to_string()),
                            "{name}: reason must name the backup and its watermark: {reason}"
                        );
                        assert!(
                            reason.contains("palisade-supervisor restore-state")
                                && reason.contains("investigate"),
                            "{name}: reason must say what to do: {reason}"
                        );
                    }
                    for needle in mentions {
                        assert!(reason.contains(needle), "{name}: {needle:?} in {reason}");
                    }
                }
                (_, decision) => panic!("{name}: unexpected {decision:?}"),
            }
        }
    }

    #[test]
    fn restore_decision_table() {
        use SignStateError as E;
        let low = mark(50, 0, Step::Precommit);
        let high = mark(60, 0, Step::Precommit);
        let higher = mark(61, 0, Step::None);
        let candidate = backup("b9", 9, high);
        /// (name, local state, candidate, highest known, expected)
        type Case = (
            &'static str,
            LocalState,
            KnownWatermark,
            Watermark,
            Result<(), E>,
        );
        let cases: Vec<Case> = vec![
            (
                "local missing",
                LocalState::Missing,
                candidate.clone(),
                high,
                Ok(()),
            ),
            (
                "local unreadable",
                LocalState::Unreadable(E::Truncated),
                candidate.clone(),
                high,
                Ok(()),
            ),
            (
                "local lower",
                LocalState::Present(low),
                candidate.clone(),
                high,
                Ok(()),
            ),
            (
                "candidate below the highest known",
                LocalState::Missing,
                candidate.clone(),
                higher,
                Err(E::BelowKnownWatermark {
                    proposed: high,
                    known: higher,
                    origin: "backup b9 (sequence 9) in store bastion-a".into(),
                }),
            ),
            (
                "candidate above the stated highest",
                LocalState::Missing,
                candidate.clone(),
                low,
                Err(E::HighestKnownStale {
                    candidate: high,
                    known: low,
                }),
            ),
            (
                "local equal: nothing to do",
                LocalState::Present(high),
                candidate.clone(),
                high,
                Err(E::RestoreNotNeeded {
                    local: high,
                    candidate: high,
                }),
            ),
            (
                "local above the candidate",
                LocalState::Present(higher),
                candidate.clone(),
                high,
                Err(E::HeightRegression {
                    current: higher,
                    proposed: high,
                }),
            ),
        ];
        for (name, local_state, candidate, highest_known, expected) in cases {
            let result = restore_decision(&local_state, &candidate, highest_known);
            assert_eq!(result, expected, "{name}");
            if let Err(error) = result {
                let message = error.to_string();
                assert!(
                    message.contains(&candidate.watermark.to_string()),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn the_high_water_record_counts_as_a_known_watermark() {
        let record = KnownWatermark {
            watermark: mark(20, 0, Step::Precommit),
            source: WatermarkSource::HighWaterRecord(
                "/var/lib/palisade/vault/high-water.json".into(),
            ),
        };
        // (local state, refused?, words the reason must hold)
        let table: [(LocalState, bool, &[&str]); 5] = [
            (
                LocalState::Present(mark(20, 0, Step::Precommit)),
                false,
                &[],
            ),
            (LocalState::Present(mark(21, 0, Step::None)), false, &[]),
            (
                LocalState::Present(mark(20, 0, Step::Prevote)),
                true,
                &["high-water record", "went back", "High-water record"],
            ),
            (
                LocalState::Present(mark(3, 0, Step::Precommit)),
                true,
                &["is higher at height 20 round 0 step 3", "restore-state"],
            ),
            (
                LocalState::Missing,
                true,
                &["is missing", "high-water.json"],
            ),
        ];
        for (local_state, refused, words) in table {
            let decision =
                start_decision(&local_state, Path::new(PATH), std::slice::from_ref(&record));
            match decision {
                StartDecision::Refuse {
                    reason, highest, ..
                } => {
                    assert!(refused, "{local_state:?} refused: {reason}");
                    assert_eq!(highest, Some(record.clone()));
                    for word in words {
                        assert!(reason.contains(word), "{word:?} not in {reason}");
                    }
                }
                StartDecision::Start { .. } => assert!(!refused, "{local_state:?} started"),
            }
        }
    }

    #[test]
    fn equal_hrs_with_different_sign_bytes_is_a_conflict() {
        let at = mark(7, 1, Step::Precommit);
        let local_state = |signbytes: &[u8]| super::super::SignState {
            height: at.height,
            round: at.round,
            step: at.step,
            signature: vec![1; 64],
            signbytes: signbytes.to_vec(),
        };
        let signed = |watermark: Watermark, signbytes: &[u8]| BackedUpSignature {
            known: backup("b-7", 9, watermark),
            signbytes: signbytes.to_vec(),
            host_id: "host-b".into(),
        };
        // (local sign bytes, backups, conflict?)
        let table: Vec<(&[u8], Vec<BackedUpSignature>, bool)> = vec![
            (b"AA", vec![signed(at, b"AA")], false),
            (b"AA", vec![signed(at, b"AB")], true),
            (b"AA", vec![signed(at, b"AA"), signed(at, b"AB")], true),
            // Another HRS: not comparable.
            (b"AA", vec![signed(mark(7, 1, Step::Prevote), b"AB")], false),
            (b"AA", vec![signed(mark(8, 0, Step::Propose), b"AB")], false),
            // No sign bytes on either side prove nothing.
            (b"", vec![signed(at, b"AB")], false),
            (b"AA", vec![signed(at, b"")], false),
            (b"AA", vec![], false),
        ];
        for (local_bytes, backups, conflict) in table {
            let found = signbytes_conflict(Path::new(PATH), &local_state(local_bytes), &backups);
            assert_eq!(
                found.is_some(),
                conflict,
                "{local_bytes:?} vs {backups:?}: {found:?}"
            );
            if let Some(reason) = found {
                for word in [
                    "b-7",
                    "host-b",
                    "height 7 round 1 step 3",
                    "different",
                    PATH,
                ] {
                    assert!(reason.contains(word), "{word:?} not in {reason}");
                }
            }
        }
    }
}
