//! Which SSH ciphers to offer, and in what order.
//!
//! Only the AEAD ciphers OpenSSH has shipped for years:
//! `aes256-gcm@openssh.com`, `aes128-gcm@openssh.com` and
//! `chacha20-poly1305@openssh.com` (no CBC, no CTR with a separate MAC).
//! The default order is chosen by the CPU ([`default_order`]): AES-GCM
//! first where the CPU has AES and carry-less multiply instructions (x86-64
//! AES-NI + PCLMULQDQ, aarch64 AES), where it is about three times as fast
//! as ChaCha20-Poly1305 (`palisade-bench --only tunnel_throughput` measures
//! both against OpenSSH); ChaCha20-Poly1305 first elsewhere, where a
//! software AES would be slow and not constant-time. The server picks the
//! first of ours that it supports.

use std::borrow::Cow;

use russh::cipher;
/// A cipher's name (russh's type), for callers that do not depend on russh.
pub use russh::cipher::Name;

/// The names accepted in configuration, in the order of [`default_order`]
/// on a CPU with AES instructions.
pub const SUPPORTED: [&str; 3] = [
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
];

/// Whether this CPU has the instructions that make AES-GCM fast.
pub fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The order to offer on a CPU with or without AES instructions.
pub fn order_for(aes_instructions: bool) -> Vec<Name> {
    if aes_instructions {
        vec![
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_GCM,
        ]
    } else {
        vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
        ]
    }
}

/// The order to offer on this machine.
pub fn default_order() -> Vec<Name> {
    order_for(has_aes_instructions())
}

/// Configured cipher names, in the configured order: each must be one of
/// [`SUPPORTED`], none twice, at least one.
pub fn parse(names: &[String]) -> Result<Vec<Name>, String> {
    if names.is_empty() {
        return Err(format!(
            "must name at least one cipher: {}",
            SUPPORTED.join(", ")
        ));
    }
    let mut order = Vec::new();
    for name in names {
        let Some(known) = SUPPORTED.iter().find(|known| **known == name.as_str()) else {
            return Err(format!(
                "{name:?} is not supported; use {}",
                SUPPORTED.join(", ")
            ));
        };
        let parsed = Name::try_from(*known).map_err(|()| format!("{name:?}: unknown to russh"))?;
        if order.contains(&parsed) {
            return Err(format!("{name:?} is listed twice"));
        }
        order.push(parsed);
    }
    Ok(order)
}

/// russh's algorithm preferences with `order` as the ciphers and its
/// defaults (curve25519 / mlkem key exchange, ed25519 first) for the rest.
pub fn preferred(order: &[Name]) -> russh::Preferred {
    russh::Preferred {
        cipher: Cow::Owned(order.to_vec()),
        ..russh::Preferred::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_decides_which_aead_comes_first() {
        assert_eq!(order_for(true)[0], cipher::AES_256_GCM);
        assert_eq!(order_for(false)[0], cipher::CHACHA20_POLY1305);
        for aes in [true, false] {
            let order = order_for(aes);
            assert_eq!(order.len(), SUPPORTED.len());
            for name in SUPPORTED {
                assert!(order.iter().any(|n| n.as_ref() == name), "{name}");
            }
        }
    }

    /// (configured names, accepted order or the error's fragment)
    #[test]
    fn configured_names_table() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Expected = Result<Vec<&'static str>, &'static str>;
        let cases: Vec<(Vec<String>, Expected)> = vec![
            (
                names(&["chacha20-poly1305@openssh.com"]),
                Ok(vec!["chacha20-poly1305@openssh.com"]),
            ),
            (
                names(&["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]),
                Ok(vec!["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]),
            ),
            (names(&[]), Err("at least one cipher")),
            (names(&["aes256-ctr"]), Err("is not supported")),
            (names(&["3des-cbc"]), Err("is not supported")),
            (names(&["none"]), Err("is not supported")),
            (
                names(&["aes256-gcm@openssh.com", "aes256-gcm@openssh.com"]),
                Err("listed twice"),
            ),
        ];
        for (input, expected) in cases {
            let outcome = parse(&input);
            match (outcome, expected) {
                (Ok(order), Ok(expected)) => {
                    let got: Vec<&str> = order.iter().map(|n| n.as_ref()).collect();
                    assert_eq!(got, expected, "{input:?}");
                }
                (Err(error), Err(fragment)) => {
                    assert!(error.contains(fragment), "{input:?}: {error}")
                }
                (outcome, expected) => panic!("{input:?}: {outcome:?}, expected {expected:?}"),
            }
        }
    }
}
