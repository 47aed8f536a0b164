//! Which upgrade plans are new: the reads the executor does before it hands
//! a plan to the machine. A plan is new unless it maps to the version
//! `current` already runs, or it is the plan that activated that version
//! (`current/upgrade-info.json`).

use crate::config::Config;
use crate::upgrade::layout::Layout;
use crate::upgrade::perform::{active_plan_name, plan_version};
use crate::upgrade::plan::UpgradePlan;
use crate::upgrade::watch::{FileState, read_plan_file};

/// Whether `plan` is new. A plan whose name cannot be used is new (the
/// upgrade path reports it and halts); so is any plan when `current`
/// cannot be read (the upgrade path says why).
pub fn is_new_plan(config: &Config, layout: &Layout, plan: &UpgradePlan) -> bool {
    let current = match layout.current_version() {
        Ok(current) => current,
        Err(error) => {
            tracing::warn!(%error, "cannot read the current version; treating the plan as new");
            return true;
        }
    };
    let Ok(target) = plan_version(config, plan) else {
        return true;
    };
    if target == current {
        return false;
    }
    let activated_current = active_plan_name(layout, &current).is_some_and(|active| {
        plan_version(
            config,
            &UpgradePlan {
                name: active,
                height: None,
                info: String::new(),
            },
        )
        .ok()
            == Some(target.clone())
    });
    !activated_current
}

/// A new plan in `data/upgrade-info.json` now, if any. An invalid file is
/// logged and ignored.
pub fn new_plan_in_file(config: &Config, layout: &Layout) -> Option<UpgradePlan> {
    match read_plan_file(&config.upgrade_info_path()) {
        FileState::Plan(plan) if is_new_plan(config, layout, &plan) => Some(plan),
        FileState::Invalid(reason) => {
            tracing::error!(%reason, "upgrade-info.json is invalid; ignoring it");
            None
        }
        _ => None,
    }
}
