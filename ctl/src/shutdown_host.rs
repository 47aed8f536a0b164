//! `palisade-ctl shutdown-host`: both steps of `host.shutdown`.
//!
//! 1. `host.shutdown {}` returns a confirmation token (bound to this
//!    operator, valid for a minute, single use) and the command the
//!    supervisor will run.
//! 2. Unless `--yes`, the operator types the validator's name (as its
//!    greeting gives it) — no connection is open meanwhile.
//! 3. `host.shutdown {"confirm": TOKEN}` on a new connection, as the same
//!    operator: the supervisor answers, then stops the node, takes the
//!    final backup, wipes the keys, runs the command and exits.

use std::io::{BufRead, Write};

use palisade_wire::rpc::methods::{HostShutdown, Method};
use palisade_wire::rpc::params::HostShutdownParams;
use palisade_wire::rpc::results::HostShutdownResult;
use serde_json::Value;

use crate::{ConnectionArgs, Error};

/// `params` as the request's JSON.
fn params_json(params: &HostShutdownParams) -> Result<Value, Error> {
    serde_json::to_value(params)
        .map_err(|error| Error::Output(format!("cannot encode the params: {error}")))
}

/// Whether the typed line names `validator` (surrounding blanks and the
/// line ending ignored; nothing else is).
pub fn confirms(typed: &str, validator: &str) -> bool {
    !validator.is_empty() && typed.trim() == validator
}

/// Run `shutdown-host`; `yes` skips the typed confirmation (scripts).
pub fn run(connection: &ConnectionArgs, yes: bool, json: bool) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Output(format!("cannot start the runtime: {error}")))?;
    let (validator, offer) = runtime.block_on(async {
        let mut client = crate::connect(connection).await?;
        let validator = client.greeting().validator.clone();
        let request = params_json(&HostShutdownParams::request())?;
        let offer = client.call(HostShutdown::NAME, Some(request)).await?;
        Ok::<_, Error>((validator, offer))
    })?;
    let offer = match serde_json::from_value::<HostShutdownResult>(offer.clone()) {
        Ok(HostShutdownResult::TokenIssued(offer)) => offer,
        _ => {
            return Err(Error::Output(format!(
                "host.shutdown answered without a confirmation token: {offer}"
            )));
        }
    };
    let shown = palisade_client::peer_text::clean(&validator);
    let command = crate::render::command_line(&offer.command);
    if !yes {
        eprintln!(
            "This stops {shown}'s node, takes a final backup, wipes its keys, runs `{command}` \
             on the validator host, and ends the supervisor."
        );
        eprint!("Type the validator's name ({shown}) to shut the host down: ");
        let _ = std::io::stderr().flush();
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut typed)
            .map_err(|error| Error::Usage(format!("cannot read the confirmation: {error}")))?;
        if !confirms(&typed, &validator) {
            return Err(Error::NotConfirmed(format!(
                "the name typed is not {shown}: host shutdown not confirmed; nothing was done \
                 (the token expires unused)"
            )));
        }
    }
    let result = runtime.block_on(async {
        let mut client = crate::connect(connection).await?;
        let confirm = params_json(&HostShutdownParams::confirm(offer.confirm))?;
        let result = client.call(HostShutdown::NAME, Some(confirm)).await?;
        Ok::<_, Error>(result)
    })?;
    if json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|error| Error::Output(format!("cannot encode JSON: {error}")))?;
        println!("{}", crate::render::escape_json_output(&text));
    } else {
        print!("{}", crate::render::render("host.shutdown", &result));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_validators_name_confirms() {
        let cases = [
            ("val1\n", "val1", true),
            ("  val1 \r\n", "val1", true),
            ("val1", "val1", true),
            ("VAL1\n", "val1", false),
            ("val\n", "val1", false),
            ("val1 val1\n", "val1", false),
            ("yes\n", "val1", false),
            ("\n", "val1", false),
            ("", "val1", false),
            ("\n", "", false),
        ];
        for (typed, validator, expected) in cases {
            assert_eq!(
                confirms(typed, validator),
                expected,
                "{typed:?} {validator:?}"
            );
        }
    }
}
