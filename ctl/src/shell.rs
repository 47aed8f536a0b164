//! `palisade-ctl shell`: the interactive shell.
//!
//! Each line is split into words ([`split_words`]), parsed with the same
//! clap definitions as one-shot mode ([`crate::Cli`], with the connection
//! flags refused: they belong to the start of the shell) and run through
//! the same steps ([`crate::run_local`], [`crate::run_call`]) over one
//! connection kept open across commands. Before each command the shell
//! checks that the connection is still open (the supervisor closes idle
//! ones) and reconnects, saying so; a call that fails on the connection
//! drops it and the next command reconnects.
//!
//! Invariants:
//! - the vault passphrase is read only by the no-echo prompt (rpassword on
//!   /dev/tty), never from the line, and lives only in zeroizing buffers;
//! - no line that may hold a secret enters the history, in memory or on
//!   disk ([`history_entry`]); the history file is 0600 in a 0700
//!   directory and holds at most [`HISTORY_SIZE`] lines;
//! - text from the supervisor (its name, the node state) passes through
//!   [`palisade_client::peer_text::clean`] before it reaches the prompt;
//! - colours only when stdout is a terminal, TERM is set and not `dumb`,
//!   and NO_COLOR is not set ([`Style`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::OsString;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches};
use palisade_client::peer_text::clean;
use palisade_client::{Client, FailureKind};
use palisade_wire::rpc::results::{EipListResult, TunnelEntry};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Context, Editor, Helper};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};
use zeroize::Zeroizing;

use crate::{Cli, Command, ConnectionArgs, Error, PlannedCall, exit_code};

/// `palisade-ctl shell --help`.
pub const LONG_ABOUT: &str =
    "Interactive shell: the same commands as one-shot mode, typed at a prompt
that shows the validator and its node state (`val-a (running) ▸`; the state
comes from a `status` call after connecting and after each command).

One connection is opened when the shell starts and kept for every command
(one TLS handshake and login, not one per command). The supervisor closes a
connection left idle (`[rpc] idle-timeout`, 60 s by default) and may
restart: before each command the shell checks the connection and reconnects,
saying so. `eip rotate`, which answers when the rotation is done, runs on a
connection of its own that waits up to 120 s (or --timeout). A command that
fails prints the same error as in one-shot mode and the shell goes on; when
the connection was lost the prompt says `(disconnected)` and the next
command reconnects. Ctrl-C during a call stops waiting for its answer (the
supervisor may still carry it out).

Connection flags (--socket, --via, --validator, --pin, --operator, --key,
--timeout, ...) go before `shell` and hold for the whole session; typed on a
line they are refused. `connect NAME` switches to another validator of the
config file, `connect` alone goes back to the first one.

Each line is parsed like the command line of one-shot mode, with shell
quoting ('...', \"...\", backslash): `status`, `logs --lines 20`,
`node stop`, `upgrade add v2 --path /opt/gaiad-v2`,
`call tunnel.reconnect --params '{\"bastion\":\"b1\"}'`. Add --json to a line
for the raw JSON result (or start the shell with --json for every line).

Shell commands:
  help [COMMAND]   list the commands, or show one command's options
  connect [NAME]   switch to validator NAME of the config
  exit, quit       leave (so does Ctrl-D on an empty line)

Keys: Tab completes commands, subcommands, flags, method names after
`call`, validator names after `connect` and bastion names after
`eip rotate` (those the supervisor last named: `eip list`, else `status`
and `tunnels`; Tab twice lists the choices);
the grey hint shows the rest of a command and what it needs, Right arrow
takes it; Up/Down walk the history, Ctrl-R searches it; Ctrl-C drops the
line being typed.

unlock: the passphrase is asked for on the terminal with no echo, never
taken from the line (--passphrase-stdin is for scripts, not the shell). It
never appears on screen or in the history.

History: $XDG_STATE_HOME/palisade/ctl_history, else
~/.local/state/palisade/ctl_history (or --history-file FILE; --no-history
for none): the last 1000 lines, file 0600 in a 0700 directory, written after
each line so concurrent shells merge. Lines that may hold a secret are never
recorded, in memory or on disk: any line mentioning a passphrase, password,
secret, token, mnemonic or private key, `vault.unlock`, `unlock` with
arguments, and lines starting with a space.

Colours (prompt, errors in red, dim hints) only when stdout is a terminal,
TERM is set and not `dumb`, and NO_COLOR is not set. With TERM=dumb the
line is read plainly: no editing, completion or hints. With stdin not a
terminal the shell reads one command per line with no prompt and no
history (`palisade-ctl shell < commands.txt`).";

/// `palisade-ctl shell --help`, after the options.
pub const AFTER_HELP: &str = "Examples:
  palisade-ctl --socket /run/palisade/supervisor.sock shell
  palisade-ctl --validator val-b shell
  palisade-ctl shell --no-history
  palisade-ctl --socket /run/palisade/supervisor.sock shell < commands.txt

In the shell:
  val-a (locked) ▸ unlock
  Vault passphrase:
  val-a (starting) ▸ logs --lines 20
  val-a (running) ▸ call tunnel.reconnect --params '{\"bastion\":\"b1\"}'
  val-a (running) ▸ connect val-b";

/// Options of `shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Keep the history in FILE [default: $XDG_STATE_HOME/palisade/ctl_history,
    /// else ~/.local/state/palisade/ctl_history].
    #[arg(long, value_name = "FILE")]
    pub history_file: Option<PathBuf>,

    /// Keep no history file (Up still recalls this session's lines).
    #[arg(long, conflicts_with = "history_file")]
    pub no_history: bool,
}

/// Lines kept in the history (in memory and in the file).
pub const HISTORY_SIZE: usize = 1000;

/// How long the check before each command waits for a closed connection
/// to show (a close that happened while the shell waited for typing is
/// already there; this only bounds the look).
const OPEN_CHECK: Duration = Duration::from_millis(25);

/// The shell's own commands.
const BUILTINS: &[(&str, &str, &str)] = &[
    (
        "help",
        "[COMMAND]",
        "List the commands, or show COMMAND's options",
    ),
    (
        "connect",
        "[NAME]",
        "Switch to validator NAME of the config; without NAME, back to the first",
    ),
    ("exit", "", "Leave the shell (also Ctrl-D)"),
    ("quit", "", "Leave the shell (also Ctrl-D)"),
];

/// Subcommands that make no sense inside the shell: not offered.
const NOT_IN_SHELL: &[&str] = &["shell"];

/// Flags for scripts that the shell refuses (it always asks): not offered.
const SCRIPT_FLAGS: &[(&str, &str)] = &[("unlock", "passphrase_stdin"), ("shutdown-host", "yes")];

// ---------------------------------------------------------------------------
// Words

/// One word of a line: its text with quotes and escapes removed, and the
/// byte offset where it starts in the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
}

/// A line split into words, as far as it goes (a partial line, for
/// completion, may end inside a quote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed {
    pub words: Vec<Word>,
    /// The quote still open at the end of the line.
    pub open_quote: Option<char>,
    /// The line ends inside a word (not after a blank).
    pub in_word: bool,
}

/// Split `line` like a POSIX shell does, without expansions: blanks
/// separate words, `'...'` is literal, in `"..."` a backslash escapes
/// only `"`, `\`, `$` and a backquote, outside quotes a backslash takes
/// the next character literally.
pub fn lex(line: &str) -> Lexed {
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        let word = current.get_or_insert_with(|| Word {
            text: String::new(),
            start: index,
        });
        match quote {
            Some(open) if c == open => quote = None,
            Some('"') if c == '\\' => match chars.peek() {
                Some(&(_, next)) if matches!(next, '"' | '\\' | '$' | '`') => {
                    word.text.push(next);
                    chars.next();
                }
                _ => word.text.push('\\'),
            },
            Some(_) => word.text.push(c),
            None => match c {
                c if c.is_whitespace() => {
                    // Started above only to be dropped: a blank ends a word.
                    let word = current.take().expect("inserted above");
                    if word.start != index {
                        words.push(word);
                    }
                }
                '\'' | '"' => quote = Some(c),
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        word.text.push(next);
                    }
                }
                c => word.text.push(c),
            },
        }
    }
    let in_word = current.is_some();
    words.extend(current);
    Lexed {
        words,
        open_quote: quote,
        in_word,
    }
}

/// The words of a complete line; an unclosed quote is an error.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let lexed = lex(line);
    if let Some(quote) = lexed.open_quote {
        return Err(format!("unclosed {quote} in the line"));
    }
    Ok(lexed.words.into_iter().map(|word| word.text).collect())
}

// ---------------------------------------------------------------------------
// Parsing a line

/// The ids of the connection flags ([`ConnectionArgs`]), whatever they are.
fn connection_ids() -> Vec<clap::Id> {
    ConnectionArgs::augment_args(clap::Command::new("connection"))
        .get_arguments()
        .map(|arg| arg.get_id().clone())
        .collect()
}

/// The clap command a shell line is parsed with: one-shot mode's, with no
/// program name, no `help` subcommand (the shell has its own) and the
/// connection flags hidden (they are refused when typed).
pub fn line_grammar() -> clap::Command {
    let mut command = Cli::command()
        .no_binary_name(true)
        .disable_help_subcommand(true)
        .bin_name("")
        .color(clap::ColorChoice::Never);
    for id in connection_ids() {
        command = command.mut_arg(id, |arg| arg.hide(true));
    }
    for &(name, id) in SCRIPT_FLAGS {
        let present = command
            .find_subcommand(name)
            .is_some_and(|sub| sub.get_arguments().any(|arg| arg.get_id() == id));
        if present {
            command = command.mut_subcommand(name, |sub| sub.mut_arg(id, |arg| arg.hide(true)));
        }
    }
    command.build();
    command
}

/// What a line turned out to be.
#[derive(Debug)]
pub enum Parsed {
    /// A command to run.
    Run(Box<Cli>),
    /// Text to print (`--help`, `--version`).
    Say(String),
    /// Refused: a usage error, to print as an error.
    Refuse(String),
}

/// clap's text without styles, its usage lines fixed for the shell (no
/// program name).
fn plain(styled: &clap::builder::StyledStr) -> String {
    styled
        .to_string()
        .replace("Usage:  ", "Usage: ")
        .trim_end()
        .to_string()
}

/// Parse `words` with `grammar` ([`line_grammar`]).
pub fn parse_line(grammar: &clap::Command, words: &[String]) -> Parsed {
    let render = |error: &clap::Error| plain(&error.render());
    let matches = match grammar.clone().try_get_matches_from(words) {
        Ok(matches) => matches,
        Err(error) => {
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Parsed::Say(render(&error))
                }
                _ => Parsed::Refuse(render(&error)),
            };
        }
    };
    let typed: Vec<String> = connection_ids()
        .iter()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| {
            let long = grammar
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_long())
                .unwrap_or(id.as_str());
            format!("--{long}")
        })
        .collect();
    if !typed.is_empty() {
        return Parsed::Refuse(format!(
            "{} {} for the whole session: give {} when starting the shell \
             (palisade-ctl {} … shell), not per command",
            typed.join(", "),
            if typed.len() == 1 {
                "is set"
            } else {
                "are set"
            },
            if typed.len() == 1 { "it" } else { "them" },
            typed[0],
        ));
    }
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Parsed::Run(Box::new(cli)),
        Err(error) => Parsed::Refuse(render(&error)),
    }
}

// ---------------------------------------------------------------------------
// Completion and hints

/// Where the word being typed stands.
#[derive(Debug)]
enum Slot<'a> {
    /// The first word: a command or a shell command.
    Command,
    /// A subcommand of this command.
    Subcommand(&'a clap::Command),
    /// A flag of this command; the ids already given.
    Flag(&'a clap::Command, Vec<clap::Id>),
    /// The value of this flag.
    Value(&'a clap::Arg),
    /// The positional argument `index` of this command.
    Positional(&'a clap::Command, usize),
    /// After `help`: a command (top level) or a subcommand of this one.
    HelpTopic(Option<&'a clap::Command>),
    /// After `connect`: a validator name.
    Validator,
    /// Nothing to offer.
    Nothing,
}

/// The position of the word being typed: its slot, and whether the word
/// before it named the command (so its synopsis is worth a hint).
#[derive(Debug)]
struct Position<'a> {
    slot: Slot<'a>,
    /// The command (or shell command) the previous word named.
    named: Option<Named<'a>>,
}

#[derive(Debug, Clone, Copy)]
enum Named<'a> {
    Command(&'a clap::Command),
    Builtin(&'static str),
}

/// What completion and hints know: the grammar, the methods, the
/// validators of the config, the bastions the supervisor named.
#[derive(Debug, Clone)]
pub struct Completions {
    grammar: clap::Command,
    validators: Vec<String>,
    bastions: Vec<String>,
}

/// The positional arguments completed with bastion names (`eip rotate
/// BASTION`).
const BASTION_ARG: &str = "bastion";

/// At most this many bastion names are kept for completion.
const MAX_BASTIONS: usize = 64;

/// One candidate: what is listed, and what is inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub display: String,
    pub replacement: String,
}

impl Candidate {
    fn word(text: &str) -> Candidate {
        Candidate {
            display: text.to_string(),
            replacement: format!("{text} "),
        }
    }
}

/// The hint shown after the cursor: `display` in grey; Right arrow
/// inserts only `completion` (the rest of the word, never the synopsis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellHint {
    pub display: String,
    pub completion: Option<String>,
}

impl Hint for ShellHint {
    fn display(&self) -> &str {
        &self.display
    }

    fn completion(&self) -> Option<&str> {
        self.completion.as_deref()
    }
}

/// The methods offered after `call`: all but the login and secret ones
/// (those have their own commands, or would break the session).
pub fn callable_methods() -> Vec<&'static str> {
    palisade_wire::rpc::METHODS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| {
            !name.starts_with("auth.") && !palisade_wire::rpc::SECRET_METHODS.contains(name)
        })
        .collect()
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && !NOT_IN_SHELL.contains(&sub.get_name()))
}

fn find_long<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long_and_visible_aliases()
            .is_some_and(|longs| longs.contains(&name))
    })
}

fn find_short(command: &clap::Command, short: char) -> Option<&clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_short() == Some(short))
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

fn repeatable(arg: &clap::Arg) -> bool {
    matches!(
        arg.get_action(),
        clap::ArgAction::Append | clap::ArgAction::Count
    )
}

/// What a command still needs, for the hint: its subcommands, or its
/// arguments (`<required>`, `[optional]`).
pub fn synopsis(command: &clap::Command) -> String {
    if command.has_subcommands() {
        return visible_subcommands(command)
            .map(|sub| sub.get_name())
            .collect::<Vec<_>>()
            .join("|");
    }
    let mut parts = Vec::new();
    for arg in command.get_positionals().filter(|arg| !arg.is_hide_set()) {
        let name = value_name(arg);
        parts.push(if arg.is_required_set() {
            format!("<{name}>")
        } else {
            format!("[{name}]")
        });
    }
    let flag = |arg: &clap::Arg| {
        let long = arg.get_long().unwrap_or_default();
        if takes_value(arg) {
            format!("--{long} <{}>", value_name(arg))
        } else {
            format!("--{long}")
        }
    };
    let mut grouped = HashSet::new();
    for group in command.get_groups().filter(|group| group.is_required_set()) {
        let members: Vec<&clap::Arg> = group
            .get_args()
            .filter_map(|id| command.get_arguments().find(|arg| arg.get_id() == id))
            .collect();
        grouped.extend(members.iter().map(|arg| arg.get_id().clone()));
        parts.push(format!(
            "<{}>",
            members
                .iter()
                .map(|arg| flag(arg))
                .collect::<Vec<_>>()
                .join("|")
        ));
    }
    for arg in command.get_arguments() {
        if arg.is_positional()
            || arg.is_hide_set()
            || arg.is_global_set()
            || arg.get_long().is_none()
            || matches!(arg.get_id().as_str(), "help" | "version")
            || grouped.contains(arg.get_id())
        {
            continue;
        }
        parts.push(if arg.is_required_set() {
            flag(arg)
        } else {
            format!("[{}]", flag(arg))
        });
    }
    parts.join(" ")
}

impl Completions {
    pub fn new(grammar: clap::Command, validators: Vec<String>) -> Completions {
        Completions {
            grammar,
            validators,
            bastions: Vec::new(),
        }
    }

    /// The bastion names to offer from now on (see [`bastion_names`]).
    pub fn set_bastions(&mut self, bastions: Vec<String>) {
        self.bastions = bastions;
    }

    /// Where the word after `previous` stands; `current` is the word being
    /// typed (a flag when it starts with '-').
    fn position(&self, previous: &[String], current: &str) -> Position<'_> {
        let Some((first, rest)) = previous.split_first() else {
            return Position {
                slot: Slot::Command,
                named: None,
            };
        };
        if let Some(&(name, _, _)) = BUILTINS.iter().find(|(name, _, _)| name == first) {
            let named = rest.is_empty().then_some(Named::Builtin(name));
            let slot = match name {
                "help" => {
                    let mut command: Option<&clap::Command> = None;
                    for word in rest {
                        let parent = command.unwrap_or(&self.grammar);
                        match visible_subcommands(parent).find(|sub| sub.get_name() == word) {
                            Some(sub) if sub.has_subcommands() => command = Some(sub),
                            _ => {
                                return Position {
                                    slot: Slot::Nothing,
                                    named,
                                };
                            }
                        }
                    }
                    Slot::HelpTopic(command)
                }
                "connect" if rest.is_empty() => Slot::Validator,
                _ => Slot::Nothing,
            };
            return Position { slot, named };
        }
        let mut command = &self.grammar;
        let mut named = None;
        let mut used: Vec<clap::Id> = Vec::new();
        let mut positional = 0;
        let mut pending: Option<&clap::Arg> = None;
        let mut options_ended = false;
        for word in previous {
            named = None;
            if pending.take().is_some() {
                continue;
            }
            if !options_ended && word == "--" {
                options_ended = true;
                continue;
            }
            if !options_ended && let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((name, _)) => (name, true),
                    None => (long, false),
                };
                if let Some(arg) = find_long(command, name) {
                    used.push(arg.get_id().clone());
                    if takes_value(arg) && !inline {
                        pending = Some(arg);
                    }
                }
                continue;
            }
            if !options_ended && word.len() > 1 && word.starts_with('-') {
                let mut shorts = word[1..].chars();
                if let Some(arg) = shorts.next().and_then(|short| find_short(command, short)) {
                    used.push(arg.get_id().clone());
                    if takes_value(arg) && shorts.as_str().is_empty() {
                        pending = Some(arg);
                    }
                }
                continue;
            }
            if positional == 0 && command.has_subcommands() {
                match command.find_subcommand(word) {
                    Some(sub) if !NOT_IN_SHELL.contains(&sub.get_name()) => {
                        command = sub;
                        named = Some(Named::Command(sub));
                        used.clear();
                        continue;
                    }
                    _ => {
                        return Position {
                            slot: Slot::Nothing,
                            named: None,
                        };
                    }
                }
            }
            positional += 1;
        }
        let slot = if let Some(arg) = pending {
            Slot::Value(arg)
        } else if current.starts_with('-') && !options_ended {
            Slot::Flag(command, used)
        } else if command.has_subcommands() {
            Slot::Subcommand(command)
        } else {
            Slot::Positional(command, positional)
        };
        Position { slot, named }
    }

    /// Every candidate for `slot` (unfiltered).
    fn candidates(&self, slot: &Slot<'_>) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = match slot {
            Slot::Command => visible_subcommands(&self.grammar)
                .map(|sub| Candidate::word(sub.get_name()))
                .chain(BUILTINS.iter().map(|(name, _, _)| Candidate::word(name)))
                .collect(),
            Slot::Subcommand(command) => visible_subcommands(command)
                .map(|sub| Candidate::word(sub.get_name()))
                .collect(),
            Slot::HelpTopic(None) => visible_subcommands(&self.grammar)
                .map(|sub| Candidate::word(sub.get_name()))
                .chain(BUILTINS.iter().map(|(name, _, _)| Candidate::word(name)))
                .collect(),
            Slot::HelpTopic(Some(command)) => visible_subcommands(command)
                .map(|sub| Candidate::word(sub.get_name()))
                .collect(),
            Slot::Flag(command, used) => command
                .get_arguments()
                .filter(|arg| !arg.is_positional() && !arg.is_hide_set())
                .filter(|arg| repeatable(arg) || !used.contains(arg.get_id()))
                .filter_map(|arg| arg.get_long())
                .map(|long| Candidate::word(&format!("--{long}")))
                .collect(),
            Slot::Value(arg) => arg
                .get_possible_values()
                .iter()
                .filter(|value| !value.is_hide_set())
                .map(|value| Candidate::word(value.get_name()))
                .collect(),
            Slot::Positional(command, index) => {
                if command.get_name() == "call" && *index == 0 {
                    callable_methods()
                        .into_iter()
                        .map(Candidate::word)
                        .collect()
                } else if command
                    .get_positionals()
                    .nth(*index)
                    .is_some_and(|arg| arg.get_id() == BASTION_ARG)
                {
                    self.bastions
                        .iter()
                        .map(|name| Candidate::word(name))
                        .collect()
                } else {
                    command
                        .get_positionals()
                        .nth(*index)
                        .map(|arg| {
                            arg.get_possible_values()
                                .iter()
                                .filter(|value| !value.is_hide_set())
                                .map(|value| Candidate::word(value.get_name()))
                                .collect()
                        })
                        .unwrap_or_default()
                }
            }
            Slot::Validator => self
                .validators
                .iter()
                .map(|name| Candidate::word(name))
                .collect(),
            Slot::Nothing => Vec::new(),
        };
        candidates.sort_by(|a, b| a.display.cmp(&b.display));
        candidates.dedup();
        candidates
    }

    /// Split `line[..pos]` into the finished words and the one being
    /// typed (its text and where it starts); `None` inside a quote.
    fn split_at_cursor(line: &str, pos: usize) -> Option<(Vec<String>, String, usize)> {
        let before = line.get(..pos)?;
        let lexed = lex(before);
        if lexed.open_quote.is_some() {
            return None;
        }
        let mut words: Vec<Word> = lexed.words;
        let (current, start) = if lexed.in_word {
            let word = words.pop().expect("in a word");
            // A word with quotes or escapes is not completed: what would
            // be inserted could not be matched against what was typed.
            if before[word.start..] != word.text {
                return None;
            }
            (word.text, word.start)
        } else {
            (String::new(), pos)
        };
        Some((
            words.into_iter().map(|word| word.text).collect(),
            current,
            start,
        ))
    }

    /// The completions of the word before `pos`: where it starts and the
    /// candidates it may become.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<Candidate>) {
        let Some((previous, current, start)) = Completions::split_at_cursor(line, pos) else {
            return (pos, Vec::new());
        };
        let position = self.position(&previous, &current);
        let candidates = self
            .candidates(&position.slot)
            .into_iter()
            .filter(|candidate| candidate.display.starts_with(&current))
            .collect();
        (start, candidates)
    }

    /// The grey hint at the end of `line` (cursor at `pos`): the rest of
    /// the word when only one candidate fits, then what the command
    /// needs.
    pub fn hint(&self, line: &str, pos: usize) -> Option<ShellHint> {
        if pos != line.len() || line.trim().is_empty() {
            return None;
        }
        let (previous, current, _) = Completions::split_at_cursor(line, pos)?;
        let position = self.position(&previous, &current);
        if current.is_empty() {
            let display = match (&position.named, &position.slot) {
                (_, Slot::Value(arg)) => format!("<{}>", value_name(arg)),
                (Some(Named::Command(command)), _) => synopsis(command),
                (Some(Named::Builtin(_)), Slot::Validator) if !self.validators.is_empty() => {
                    self.validators.join("|")
                }
                (Some(Named::Builtin(name)), _) => BUILTINS
                    .iter()
                    .find(|(builtin, _, _)| builtin == name)
                    .map(|(_, args, _)| args.to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return (!display.is_empty()).then_some(ShellHint {
                display,
                completion: None,
            });
        }
        let matching: Vec<Candidate> = self
            .candidates(&position.slot)
            .into_iter()
            .filter(|candidate| candidate.display.starts_with(&current))
            .collect();
        let [candidate] = matching.as_slice() else {
            return None;
        };
        let rest = &candidate.display[current.len()..];
        let needs = match &position.slot {
            Slot::Command | Slot::Subcommand(_) => {
                let parent = match &position.slot {
                    Slot::Subcommand(command) => command,
                    _ => &self.grammar,
                };
                match parent.find_subcommand(&candidate.display) {
                    Some(command) => synopsis(command),
                    None => BUILTINS
                        .iter()
                        .find(|(name, _, _)| *name == candidate.display)
                        .map(|(_, args, _)| args.to_string())
                        .unwrap_or_default(),
                }
            }
            Slot::Flag(command, _) => find_long(command, &candidate.display[2..])
                .filter(|arg| takes_value(arg))
                .map(|arg| format!("<{}>", value_name(arg)))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let display = match (rest.is_empty(), needs.is_empty()) {
            (_, true) => rest.to_string(),
            (true, false) => format!(" {needs}"),
            (false, false) => format!("{rest} {needs}"),
        };
        (!display.is_empty()).then(|| ShellHint {
            display,
            completion: (!rest.is_empty()).then(|| rest.to_string()),
        })
    }
}

// ---------------------------------------------------------------------------
// Style

/// Colours and the prompt's arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours on stdout (prompt, hints).
    pub color: bool,
    /// ANSI colours on stderr (errors in red).
    pub color_errors: bool,
    /// The locale is UTF-8: `▸`, else `>`.
    pub utf8: bool,
}

impl Style {
    /// From this process's terminals and environment.
    pub fn detect() -> Style {
        let var = |name: &str| std::env::var_os(name);
        let locale = ["LC_ALL", "LC_CTYPE", "LANG"]
            .iter()
            .filter_map(|name| var(name))
            .find(|value| !value.is_empty());
        Style::from_env(
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
            var("TERM").as_deref(),
            var("NO_COLOR").as_deref(),
            locale.as_deref(),
        )
    }

    /// `NO_COLOR` counts when set and not empty (no-color.org).
    pub fn from_env(
        stdout_tty: bool,
        stderr_tty: bool,
        term: Option<&std::ffi::OsStr>,
        no_color: Option<&std::ffi::OsStr>,
        locale: Option<&std::ffi::OsStr>,
    ) -> Style {
        let term_ok = term.is_some_and(|term| !term.is_empty() && term != "dumb");
        let allowed = term_ok && no_color.is_none_or(|value| value.is_empty());
        let utf8 = locale.is_some_and(|locale| {
            let locale = locale.to_string_lossy().to_ascii_lowercase();
            locale.contains("utf-8") || locale.contains("utf8")
        });
        Style {
            color: allowed && stdout_tty,
            color_errors: allowed && stderr_tty,
            utf8,
        }
    }

    fn paint(color: bool, code: &str, text: &str) -> String {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// The prompt, plain and coloured: validator, state, arrow.
    pub fn prompt(&self, name: &str, state: Option<&str>) -> (String, String) {
        let arrow = if self.utf8 { "▸" } else { ">" };
        let raw = match state {
            Some(state) => format!("{name} ({state}) {arrow} "),
            None => format!("{name} {arrow} "),
        };
        if !self.color {
            return (raw.clone(), raw);
        }
        let name = Style::paint(true, "1", name);
        let styled = match state {
            Some(state) => {
                let code = match state {
                    "running" => "32",
                    "disconnected" | "halted" => "31",
                    _ => "33",
                };
                format!("{name} ({}) {arrow} ", Style::paint(true, code, state))
            }
            None => format!("{name} {arrow} "),
        };
        (raw, styled)
    }

    fn error(&self, message: &str) {
        eprintln!("{}", Style::paint(self.color_errors, "31", message));
    }

    fn note(&self, message: &str) {
        println!("{}", Style::paint(self.color, "2", message));
    }
}

// ---------------------------------------------------------------------------
// The line editor's helper

struct ShellHelper {
    completions: Completions,
    style: Style,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = self.completions.complete(line, pos);
        Ok((
            start,
            candidates
                .into_iter()
                .map(|candidate| Pair {
                    display: candidate.display,
                    replacement: candidate.replacement,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = ShellHint;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<ShellHint> {
        // Without colour a hint would look like typed text.
        if !self.style.color {
            return None;
        }
        self.completions.hint(line, pos)
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(Style::paint(self.style.color, "2", hint))
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

// ---------------------------------------------------------------------------
// History

/// Words that mark a line as possibly holding a secret.
const SECRET_MARKERS: &[&str] = &[
    "passphrase",
    "password",
    "passwd",
    "secret",
    "token",
    "mnemonic",
    "private",
    "vault.unlock",
];

/// The history entry for `line`, or `None` when it must not be recorded:
/// blank, starting with a space (the shells' convention for "not this
/// one"), `exit`/`quit`, or possibly holding a secret.
pub fn history_entry(line: &str) -> Option<&str> {
    let entry = line.trim_end();
    if entry.is_empty() || line.starts_with(char::is_whitespace) {
        return None;
    }
    let lower = entry.to_lowercase();
    if SECRET_MARKERS.iter().any(|marker| lower.contains(marker)) {
        return None;
    }
    // `unlock` takes its passphrase from the no-echo prompt only: anything
    // after it may be a passphrase typed by mistake.
    let words = lex(entry).words;
    match words.first().map(|word| word.text.as_str()) {
        Some("exit" | "quit") => None,
        Some("unlock")
            if words[1..]
                .iter()
                .any(|word| !matches!(word.text.as_str(), "--json" | "--help" | "-h")) =>
        {
            None
        }
        _ => Some(entry),
    }
}

/// The default history file from `$XDG_STATE_HOME` (absolute only, as the
/// XDG spec says) or `$HOME`.
pub fn default_history_path(
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let state = xdg_state_home
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| {
            home.filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(state.join("palisade/ctl_history"))
}

/// Get the history file's place ready: its directory created 0700 (and,
/// when `own_dir`, i.e. our `palisade/` directory, tightened to 0700),
/// an existing file tightened to 0600.
pub fn prepare_history(path: &Path, own_dir: bool) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let private = |path: &Path, mode: u32| -> Result<(), String> {
        let metadata = std::fs::metadata(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|error| format!("cannot make {} private: {error}", path.display()))?;
        }
        Ok(())
    };
    if own_dir {
        private(dir, 0o700)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            Err(format!("{} is not a regular file", path.display()))
        }
        Ok(_) => private(path, 0o600),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

// ---------------------------------------------------------------------------
// The session

/// Run `future` on `runtime` until it ends or Ctrl-C (`None`). SIGINTs
/// that arrived before (e.g. Ctrl-C at the passphrase prompt) are
/// dropped first.
fn interruptible<F: Future>(
    runtime: &Runtime,
    sigint: &mut Signal,
    future: F,
) -> Option<F::Output> {
    runtime.block_on(async {
        // Let the runtime take in signals received while it was idle, then
        // drop them.
        tokio::task::yield_now().await;
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(())) = sigint.poll_recv(cx) {}
            Poll::Ready(())
        })
        .await;
        tokio::select! {
            biased;
            output = future => Some(output),
            _ = sigint.recv() => None,
        }
    })
}

/// The node state in a `status` result, cleaned for the prompt.
fn node_state(status: &Value) -> Option<String> {
    status
        .get("node")?
        .get("state")?
        .as_str()
        .map(|state| short(&clean(state)))
}

/// The bastion names an answer gives, for completion: `eip.list` names
/// the bastions that can rotate (`Some(true, …)`), `status` and
/// `tunnel.list` every bastion (`Some(false, …)`). Only names that are
/// plain words are kept — what completion inserts must be typed as it
/// shows, and text from the supervisor reaches the terminal only as it
/// is when [`clean`] leaves it so.
pub fn bastion_names(method: &str, result: &Value) -> Option<(bool, Vec<String>)> {
    let (eip, names): (bool, Vec<String>) = match method {
        "eip.list" => (
            true,
            EipListResult::deserialize(result)
                .ok()?
                .bastions
                .into_iter()
                .map(|bastion| bastion.bastion)
                .collect(),
        ),
        "status" | "tunnel.list" => (
            false,
            Vec::<TunnelEntry>::deserialize(result.get("tunnels")?)
                .ok()?
                .into_iter()
                .map(|tunnel| tunnel.name)
                .collect(),
        ),
        _ => return None,
    };
    let plain = |name: &String| {
        !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('-')
            && !name.contains(char::is_whitespace)
            && !name.contains(['\'', '"', '\\'])
            && clean(name) == *name
    };
    Some((
        eip,
        names.into_iter().filter(plain).take(MAX_BASTIONS).collect(),
    ))
}

/// At most 32 characters of supervisor-given text for the prompt.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(32).collect();
    if text.chars().count() > 32 {
        out.push('…');
    }
    out
}

/// The names of the config's validators, for completion.
fn configured_validators(args: &ConnectionArgs) -> Vec<String> {
    let (path, required) = match &args.config {
        Some(path) => (Some(path.clone()), true),
        None => (crate::config::default_path(), false),
    };
    path.and_then(|path| crate::config::load(&path, required).ok())
        .map(|config| {
            config
                .validators
                .into_iter()
                .map(|entry| entry.name)
                .collect()
        })
        .unwrap_or_default()
}

enum Flow {
    Continue,
    Exit,
}

struct Session {
    args: ConnectionArgs,
    /// `--validator` as the shell was started.
    initial_validator: Option<String>,
    /// Started with flags that name one validator's endpoint or
    /// certificate: `connect NAME` would mix them up.
    fixed_endpoint: bool,
    runtime: Runtime,
    sigint: Signal,
    client: Option<Client>,
    /// Why the last connection ended; said when the next one opens.
    lost: Option<String>,
    /// The validator's name for the prompt (from the greeting once
    /// connected).
    name: String,
    /// The node's state as last seen.
    node_state: Option<String>,
    /// The bastions the supervisor last named: every one (`status`,
    /// `tunnel.list`), and those that can rotate (`eip.list`), for
    /// completion.
    bastions: Vec<String>,
    eip_bastions: Option<Vec<String>>,
    style: Style,
    grammar: clap::Command,
    json: bool,
}

impl Session {
    fn prompt(&self) -> (String, String) {
        let state = match &self.client {
            None => Some("disconnected"),
            Some(_) => self.node_state.as_deref(),
        };
        self.style.prompt(&self.name, state)
    }

    fn fail(&self, error: &dyn std::fmt::Display) {
        self.style.error(&format!("error: {error}"));
    }

    /// Take in the bastion names an answer gives ([`bastion_names`]).
    fn learn(&mut self, method: &str, result: &Value) {
        match bastion_names(method, result) {
            Some((true, names)) => self.eip_bastions = Some(names),
            Some((false, names)) => self.bastions = names,
            None => {}
        }
    }

    /// The bastion names to complete: those that can rotate once
    /// `eip.list` named them, else every bastion.
    fn completable_bastions(&self) -> Vec<String> {
        self.eip_bastions
            .clone()
            .unwrap_or_else(|| self.bastions.clone())
    }

    /// Open a new connection (dropping any old one) and learn the
    /// validator's name and node state.
    fn open(&mut self) -> Result<(), Error> {
        self.client = None;
        self.node_state = None;
        // Perhaps another supervisor: names are learnt anew.
        self.bastions.clear();
        self.eip_bastions = None;
        let opened = interruptible(&self.runtime, &mut self.sigint, crate::connect(&self.args))
            .unwrap_or_else(|| Err(Error::Usage("interrupted".into())))?;
        self.name = short(&clean(&opened.greeting().validator));
        if let Some(asked) = &self.args.validator
            && *asked != opened.greeting().validator
        {
            self.style.note(&format!(
                "note: asked for {asked}, the supervisor there calls itself {}",
                self.name
            ));
        }
        self.client = Some(opened);
        self.refresh_state();
        Ok(())
    }

    /// A connection to call on: the open one when it still is, else a new
    /// one (saying why). `false` when none could be opened (said).
    fn ensure_connected(&mut self) -> bool {
        if let Some(client) = &mut self.client {
            if self.runtime.block_on(client.is_open(OPEN_CHECK)) {
                return true;
            }
            self.client = None;
            self.lost = Some("the supervisor had closed the connection".into());
        }
        match self.open() {
            Ok(()) => {
                if let Some(reason) = self.lost.take() {
                    self.style
                        .note(&format!("reconnected to {} ({reason})", self.name));
                }
                true
            }
            Err(error) => {
                self.fail(&error);
                if self.lost.is_none() {
                    self.lost = Some("the last attempt failed".into());
                }
                false
            }
        }
    }

    /// The node state for the prompt, from a `status` call.
    fn refresh_state(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match interruptible(&self.runtime, &mut self.sigint, client.call("status", None)) {
            Some(Ok(status)) => {
                self.node_state = node_state(&status);
                self.learn("status", &status);
            }
            Some(Err(error)) if error.kind() == FailureKind::Connection => {
                self.client = None;
                self.lost = Some(format!("{error}"));
            }
            Some(Err(_)) => self.node_state = None,
            None => {
                self.client = None;
                self.lost = Some("interrupted".into());
            }
        }
    }

    /// The vault passphrase from the terminal, no echo; `None` when
    /// cancelled (Ctrl-C, Ctrl-D) or unreadable (said).
    fn ask_passphrase(&self) -> Option<SecretString> {
        match rpassword::prompt_password("Vault passphrase: ") {
            Ok(typed) => {
                let mut typed = Zeroizing::new(typed);
                if typed.is_empty() {
                    self.fail(&"empty passphrase: nothing sent");
                    return None;
                }
                Some(SecretString::from(std::mem::take(&mut *typed)))
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.style.note("cancelled: nothing sent");
                None
            }
            Err(error) => {
                self.fail(&format!(
                    "cannot read the passphrase from the terminal ({error})"
                ));
                None
            }
        }
    }

    /// `connect [NAME]`.
    fn switch(&mut self, words: &[String]) {
        let target = match words {
            [] => self.initial_validator.clone(),
            [name] if self.fixed_endpoint && self.args.validator.as_ref() != Some(name) => {
                self.fail(
                    &"the shell was started with --socket, --remote-socket or --pin, which \
                      belong to one validator: start it without them to switch between the \
                      config's validators",
                );
                return;
            }
            [name] => Some(name.clone()),
            _ => {
                self.fail(&"connect takes one validator name");
                return;
            }
        };
        let previous = std::mem::replace(&mut self.args.validator, target);
        if let Err(error) = crate::connect_options(&self.args) {
            self.args.validator = previous;
            self.fail(&error);
            return;
        }
        self.lost = None;
        if let Some(name) = &self.args.validator {
            self.name = short(name);
        }
        match self.open() {
            Ok(()) => self.style.note(&format!("connected to {}", self.name)),
            Err(error) => {
                self.fail(&error);
                self.lost = Some("the last attempt failed".into());
            }
        }
    }

    fn help(&self, words: &[String]) {
        if words.is_empty() {
            print!("{}", help_list(&self.grammar));
            return;
        }
        if let [word] = words
            && let Some((name, args, about)) = BUILTINS.iter().find(|(name, _, _)| name == word)
        {
            println!("{name} {args}\n  {about}");
            return;
        }
        let mut command = &self.grammar;
        for word in words {
            match visible_subcommands(command).find(|sub| sub.get_name() == word) {
                Some(sub) => command = sub,
                None => {
                    self.fail(&format!(
                        "no command `{}`: `help` lists them",
                        words.join(" ")
                    ));
                    return;
                }
            }
        }
        println!("{}", plain(&command.clone().render_long_help()));
    }

    /// Run one line.
    fn execute(&mut self, line: &str) -> Flow {
        let words = match split_words(line) {
            Ok(words) => words,
            Err(error) => {
                self.fail(&error);
                return Flow::Continue;
            }
        };
        let Some(first) = words.first() else {
            return Flow::Continue;
        };
        match first.as_str() {
            "exit" | "quit" if words.len() == 1 => return Flow::Exit,
            "exit" | "quit" => {
                self.fail(&format!("{first} takes no arguments"));
                return Flow::Continue;
            }
            "help" | "-h" | "--help" => {
                self.help(&words[1..]);
                return Flow::Continue;
            }
            "connect" => {
                self.switch(&words[1..]);
                return Flow::Continue;
            }
            _ => {}
        }
        let cli = match parse_line(&self.grammar, &words) {
            Parsed::Run(cli) => cli,
            Parsed::Say(text) => {
                println!("{text}");
                return Flow::Continue;
            }
            Parsed::Refuse(text) => {
                self.style.error(&text);
                return Flow::Continue;
            }
        };
        let json = cli.json || self.json;
        match &cli.command {
            Command::Shell(_) => {
                self.fail(&"this is the shell already");
                return Flow::Continue;
            }
            Command::Unlock {
                passphrase_stdin: true,
                ..
            } => {
                self.fail(
                    &"in the shell `unlock` asks for the passphrase with no echo; \
                      --passphrase-stdin is for scripts (palisade-ctl unlock --passphrase-stdin)",
                );
                return Flow::Continue;
            }
            Command::ShutdownHost { yes: true } => {
                self.fail(
                    &"in the shell shutdown-host always asks for the validator's name; \
                      --yes is for scripts",
                );
                return Flow::Continue;
            }
            Command::ShutdownHost { yes: false } => {
                // Its two steps run on connections of their own, with no
                // connection open while the name is typed.
                if let Err(error) = crate::shutdown_host::run(&self.args, false, json) {
                    self.fail(&error);
                }
                return Flow::Continue;
            }
            _ => {}
        }
        let call = match crate::run_local(&cli.command, json) {
            Ok(Some(call)) => call,
            Ok(None) => return Flow::Continue,
            Err(error) => {
                self.fail(&error);
                return Flow::Continue;
            }
        };
        // The passphrase first: no connection waits on a person typing.
        let secret = match &cli.command {
            Command::Unlock { .. } => match self.ask_passphrase() {
                Some(secret) => Some(secret),
                None => return Flow::Continue,
            },
            _ => None,
        };
        // A call that may outlast the session's timeout (`eip rotate`)
        // runs on a connection of its own with its longer timeout; the
        // session's connection keeps its own.
        let timeout = self.args.call_timeout(&cli.command);
        if timeout > self.args.session_timeout() {
            self.run_long(&call, timeout, json);
            return Flow::Continue;
        }
        if !self.ensure_connected() {
            return Flow::Continue;
        }
        let client = self.client.as_mut().expect("connected");
        let outcome = interruptible(
            &self.runtime,
            &mut self.sigint,
            crate::run_call(client, &call, secret.as_ref(), json),
        );
        drop(secret);
        match outcome {
            Some(Ok(result)) => {
                self.learn(&call.method, &result);
                if call.method == "status" {
                    self.node_state = node_state(&result);
                } else {
                    self.refresh_state();
                }
            }
            Some(Err(error)) => {
                self.fail(&error);
                if error.exit_code() == exit_code::CONNECTION {
                    self.client = None;
                    self.lost = Some("the connection was lost".into());
                    self.style
                        .note("connection lost: the next command reconnects");
                } else if matches!(error, Error::Unhealthy) {
                    self.refresh_state();
                }
            }
            None => {
                self.client = None;
                self.lost = Some("interrupted".into());
                // After the terminal's "^C".
                println!();
                self.style.note(
                    "interrupted: stopped waiting for the answer (the supervisor may still \
                     carry out the call); the next command reconnects",
                );
            }
        }
        Flow::Continue
    }

    /// Make `call` on a connection of its own that waits up to `timeout`
    /// for the answer, then refresh the prompt on the session's.
    fn run_long(&mut self, call: &PlannedCall, timeout: Duration, json: bool) {
        let args = &self.args;
        let outcome = interruptible(&self.runtime, &mut self.sigint, async {
            let mut options = crate::connect_options(args)?;
            options.call_timeout = timeout;
            let mut client = Client::connect(options).await?;
            crate::run_call(&mut client, call, None, json).await
        });
        match outcome {
            Some(Ok(result)) => self.learn(&call.method, &result),
            Some(Err(error)) => self.fail(&error),
            None => {
                // After the terminal's "^C".
                println!();
                self.style.note(
                    "interrupted: stopped waiting for the answer (the supervisor may still \
                     carry out the call)",
                );
            }
        }
        // The session's connection sat idle meanwhile: reopened if the
        // supervisor closed it.
        if self.ensure_connected() {
            self.refresh_state();
        }
    }
}

/// `help`: the commands with one line each, then the shell's own.
pub fn help_list(grammar: &clap::Command) -> String {
    let mut rows: Vec<(String, String)> = visible_subcommands(grammar)
        .map(|sub| {
            let name = if sub.has_subcommands() {
                format!(
                    "{} {}",
                    sub.get_name(),
                    visible_subcommands(sub)
                        .map(|sub| sub.get_name())
                        .collect::<Vec<_>>()
                        .join("|")
                )
            } else {
                sub.get_name().to_string()
            };
            (
                name,
                one_line(sub.get_about().map(|about| about.to_string())),
            )
        })
        .collect();
    let commands = rows.len();
    rows.extend(BUILTINS.iter().filter(|(name, _, _)| *name != "quit").map(
        |(name, args, about)| {
            let name = match *name {
                "exit" => "exit, quit".to_string(),
                _ if args.is_empty() => name.to_string(),
                _ => format!("{name} {args}"),
            };
            (name, about.to_string())
        },
    ));
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    // One line each on an 80-column terminal.
    let room = HELP_WIDTH.saturating_sub(width + 4).max(24);
    let rows = rows
        .into_iter()
        .map(|(name, about)| (name, fit(&about, room)));
    let mut out =
        String::from("Commands (add --json for the raw result, --help for the options):\n");
    for (index, (name, about)) in rows.enumerate() {
        if index == commands {
            out.push_str("Shell:\n");
        }
        out.push_str(&format!("  {name:width$}  {about}\n"));
    }
    out.push_str(
        "Keys: Tab completes (twice: lists the choices), Right arrow takes the grey hint,\n\
         \x20     Up/Down and Ctrl-R search history, Ctrl-C drops the line, Ctrl-D leaves.\n",
    );
    out
}

/// The width `help` fits its list in.
const HELP_WIDTH: usize = 80;

/// The gist of a command's about: its first sentence, up to a colon,
/// without the full stop.
fn one_line(about: Option<String>) -> String {
    let about = about.unwrap_or_default();
    let first = about.lines().next().unwrap_or_default();
    let first = first.split(". ").next().unwrap_or_default();
    let first = first.split(": ").next().unwrap_or_default();
    first.trim_end_matches('.').to_string()
}

/// `text` in at most `room` characters, cut after a word with `…`.
fn fit(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split(' ') {
        if out.chars().count() + word.chars().count() + 2 > room {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        out = text.chars().take(room.saturating_sub(1)).collect();
    }
    out.trim_end_matches([',', ';']).to_string() + "…"
}

/// `palisade-ctl shell`: run until `exit`, Ctrl-D or the end of stdin.
pub fn run(connection: ConnectionArgs, args: ShellArgs, json: bool) -> Result<(), Error> {
    // A bad config or missing endpoint ends the shell before it starts:
    // no command could work.
    crate::connect_options(&connection)?;
    let interactive = std::io::stdin().is_terminal();
    let style = Style::detect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| Error::Output(format!("cannot start the runtime: {error}")))?;
    // From here SIGINT no longer ends the process: Ctrl-C stops a call
    // (and rpassword's Ctrl-C returns instead of killing the shell with
    // the terminal left without echo).
    let sigint = runtime
        .block_on(async { signal(SignalKind::interrupt()) })
        .map_err(|error| Error::Output(format!("cannot handle Ctrl-C: {error}")))?;
    let grammar = line_grammar();
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)
        .and_then(|builder| builder.history_ignore_dups(true))
        .map_err(|error| Error::Output(format!("line editor: {error}")))?
        .history_ignore_space(true)
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .color_mode(if style.color {
            ColorMode::Enabled
        } else {
            ColorMode::Disabled
        })
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)
        .map_err(|error| Error::Output(format!("cannot start the line editor: {error}")))?;
    editor.set_helper(Some(ShellHelper {
        completions: Completions::new(grammar.clone(), configured_validators(&connection)),
        style,
    }));
    let history_file = match (&args.history_file, args.no_history || !interactive) {
        (_, true) => None,
        (Some(path), false) => Some((path.clone(), false)),
        (None, false) => {
            default_history_path(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
                .map(|path| (path, true))
        }
    };
    let mut history_file = history_file.and_then(|(path, own_dir)| {
        let loaded =
            prepare_history(&path, own_dir).and_then(|()| match editor.load_history(&path) {
                Ok(()) => Ok(()),
                Err(ReadlineError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                    Ok(())
                }
                Err(error) => Err(format!("cannot read {}: {error}", path.display())),
            });
        match loaded {
            Ok(()) => Some(path),
            Err(reason) => {
                style.error(&format!("no history file this session: {reason}"));
                None
            }
        }
    });
    let mut session = Session {
        initial_validator: connection.validator.clone(),
        fixed_endpoint: connection.socket.is_some()
            || connection.remote_socket.is_some()
            || connection.pin.is_some(),
        name: connection
            .validator
            .as_deref()
            .map(short)
            .unwrap_or_else(|| "palisade".into()),
        args: connection,
        runtime,
        sigint,
        client: None,
        lost: None,
        node_state: None,
        bastions: Vec::new(),
        eip_bastions: None,
        style,
        grammar,
        json,
    };
    match session.open() {
        Ok(()) if interactive => {
            let client = session.client.as_ref().expect("opened");
            let security = match (client.is_tls(), client.role()) {
                (true, Some(role)) => format!("TLS, role {}", format!("{role:?}").to_lowercase()),
                (true, None) => "TLS".into(),
                (false, _) => "plaintext, trusted local user".into(),
            };
            style.note(&format!(
                "connected to {} (palisade-supervisor {}, {security}). `help` lists the \
                 commands, Tab completes, `exit` or Ctrl-D leaves.",
                session.name,
                short(&clean(&client.greeting().version)),
            ));
        }
        Ok(()) => {}
        Err(error) => {
            session.fail(&error);
            session.lost = Some("the first attempt failed".into());
        }
    }
    loop {
        let _ = std::io::stdout().flush();
        if let Some(helper) = editor.helper_mut() {
            helper
                .completions
                .set_bastions(session.completable_bastions());
        }
        let prompt = session.prompt();
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => {
                return Err(Error::Output(format!(
                    "cannot read the command line: {error}"
                )));
            }
        };
        if interactive && let Some(entry) = history_entry(&line) {
            let _ = editor.add_history_entry(entry);
            if let Some(path) = &history_file
                && let Err(error) = editor.append_history(path)
            {
                style.error(&format!(
                    "no history file from now on: cannot write {}: {error}",
                    path.display()
                ));
                history_file = None;
            }
        }
        if let Flow::Exit = session.execute(&line) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).unwrap()
    }

    #[test]
    fn lines_split_like_a_shell() {
        assert_eq!(words("  status  "), ["status"]);
        assert_eq!(words("logs --lines 20"), ["logs", "--lines", "20"]);
        assert_eq!(
            words(r#"call tunnel.reconnect --params '{"bastion":"b1"}'"#),
            [
                "call",
                "tunnel.reconnect",
                "--params",
                r#"{"bastion":"b1"}"#
            ]
        );
        assert_eq!(
            words(r#"call x --params "{\"a\": \"b c\"}""#),
            ["call", "x", "--params", r#"{"a": "b c"}"#]
        );
        assert_eq!(words(r"a\ b 'c d'e "), ["a b", "c de"]);
        assert_eq!(words("x '' \"\""), ["x", "", ""]);
        assert_eq!(words(r#""a\nb""#), [r"a\nb"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert!(split_words("call x --params '{").is_err());
        assert!(split_words("say \"hi").is_err());

        let lexed = lex("node  st");
        assert!(lexed.in_word);
        assert_eq!(
            lexed.words,
            [
                Word {
                    text: "node".into(),
                    start: 0
                },
                Word {
                    text: "st".into(),
                    start: 6
                }
            ]
        );
        let lexed = lex("node ");
        assert!(!lexed.in_word);
        assert_eq!(lexed.words.len(), 1);
        assert_eq!(lex("a 'b").open_quote, Some('\''));
    }

    fn parse(line: &str) -> Parsed {
        parse_line(&line_grammar(), &words(line))
    }

    fn run_of(line: &str) -> Cli {
        match parse(line) {
            Parsed::Run(cli) => *cli,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn lines_parse_as_one_shot_commands() {
        let cases: &[(&str, &str, Option<Value>, bool)] = &[
            ("status", "status", None, false),
            ("status --json", "status", None, true),
            ("--json status", "status", None, true),
            (
                "logs --lines 20",
                "logs.tail",
                Some(serde_json::json!({"lines": 20})),
                false,
            ),
            ("node stop", "node.stop", None, false),
            ("unlock", "vault.unlock", None, false),
            (
                "upgrade add v2 --url https://x/y --checksum sha512:\
                 00000000000000000000000000000000000000000000000000000000000000000000000000000000\
                 000000000000000000000000000000000000000000000000",
                "upgrade.add",
                Some(serde_json::json!({"name": "v2", "url": "https://x/y",
                    "checksum": format!("sha512:{}", "0".repeat(128))})),
                false,
            ),
            (
                r#"call tunnel.reconnect --params '{"bastion":"b1"}'"#,
                "tunnel.reconnect",
                Some(serde_json::json!({"bastion": "b1"})),
                false,
            ),
        ];
        for (line, method, params, json) in cases {
            let cli = run_of(line);
            assert_eq!(cli.json, *json, "{line}");
            let call = crate::planned_call(&cli.command).unwrap().unwrap();
            assert_eq!(call.method, *method, "{line}");
            assert_eq!(&call.params, params, "{line}");
        }
    }

    #[test]
    fn lines_refused_or_answered() {
        for line in [
            "--socket /run/x.sock status",
            "status --socket /run/x.sock",
            "status --timeout 5",
            "node --validator val-b stop",
            "--pin sha256:1234 status",
        ] {
            match parse(line) {
                Parsed::Refuse(text) => assert!(
                    text.contains("when starting the shell") || text.contains("invalid value"),
                    "{line}: {text}"
                ),
                other => panic!("{line}: {other:?}"),
            }
        }
        match parse("--socket /run/x.sock --timeout 5 status") {
            Parsed::Refuse(text) => {
                assert!(text.contains("--socket"), "{text}");
                assert!(text.contains("--timeout"), "{text}");
                assert!(text.contains("when starting the shell"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        for line in ["nosuch", "node", "upgrade add v2", "unlock hunter2"] {
            assert!(matches!(parse(line), Parsed::Refuse(_)), "{line}");
        }
        // Values the grammar takes but the contract refuses: the command
        // fails before connecting, with the supervisor's message.
        for (line, message) in [
            (
                "logs --lines 0",
                "lines must be an integer from 1 to 1000, not 0",
            ),
            ("upgrade add v2 --path bin/gaiad", "`path` must be absolute"),
        ] {
            let error = crate::planned_call(&run_of(line).command).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{line}");
            assert!(error.to_string().contains(message), "{line}: {error}");
        }
        match parse("logs --help") {
            Parsed::Say(text) => {
                assert!(text.contains("--lines"), "{text}");
                // Connection flags are not offered per line.
                assert!(!text.contains("--socket"), "{text}");
                assert!(text.contains("Usage: logs [OPTIONS]"), "{text}");
                assert!(!text.contains('\x1b'), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn completions() -> Completions {
        Completions::new(line_grammar(), vec!["val-a".into(), "val-b".into()])
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        let (start, candidates) = completions().complete(line, line.len());
        (
            start,
            candidates
                .into_iter()
                .map(|candidate| candidate.replacement)
                .collect(),
        )
    }

    #[test]
    fn completion_candidates() {
        assert_eq!(complete("sta"), (0, vec!["status ".to_string()]));
        assert_eq!(
            complete("node s"),
            (5, vec!["start ".to_string(), "stop ".to_string()])
        );
        assert_eq!(
            complete("upgrade "),
            (8, vec!["add ".to_string(), "cancel ".to_string()])
        );
        let (_, first) = complete("");
        for expected in ["status ", "unlock ", "node ", "help ", "exit ", "connect "] {
            assert!(first.contains(&expected.to_string()), "{first:?}");
        }
        assert!(!first.contains(&"shell ".to_string()), "{first:?}");
        assert_eq!(complete("hel"), (0, vec!["help ".to_string()]));
        let (start, flags) = complete("logs --");
        assert_eq!(start, 5);
        assert!(flags.contains(&"--lines ".to_string()), "{flags:?}");
        assert!(flags.contains(&"--json ".to_string()), "{flags:?}");
        assert!(
            !flags.iter().any(|flag| flag.starts_with("--socket")),
            "{flags:?}"
        );
        let (_, flags) = complete("logs --json --");
        assert!(!flags.contains(&"--json ".to_string()), "{flags:?}");
        assert_eq!(complete("logs --lines "), (13, Vec::new()));
        assert_eq!(
            complete("upgrade add v2 --pa"),
            (15, vec!["--path ".to_string()])
        );
        assert_eq!(
            complete("call tunnel."),
            (
                5,
                vec!["tunnel.list ".to_string(), "tunnel.reconnect ".to_string()]
            )
        );
        let (_, methods) = complete("call ");
        assert!(methods.contains(&"status ".to_string()), "{methods:?}");
        assert!(
            methods.contains(&"host.shutdown ".to_string()),
            "{methods:?}"
        );
        assert!(
            !methods.iter().any(|m| m.starts_with("vault.unlock")),
            "{methods:?}"
        );
        assert!(
            !methods.iter().any(|m| m.starts_with("auth.")),
            "{methods:?}"
        );
        assert_eq!(complete("call status "), (12, Vec::new()));
        assert_eq!(
            complete("connect val"),
            (8, vec!["val-a ".to_string(), "val-b ".to_string()])
        );
        assert_eq!(complete("connect val-a "), (14, Vec::new()));
        assert_eq!(complete("help no"), (5, vec!["node ".to_string()]));
        assert_eq!(
            complete("help node "),
            (
                10,
                vec![
                    "restart ".to_string(),
                    "start ".to_string(),
                    "stop ".to_string()
                ]
            )
        );
        assert_eq!(complete("nosuch "), (7, Vec::new()));
        assert_eq!(
            complete("eip "),
            (
                4,
                vec![
                    "list ".to_string(),
                    "rotate ".to_string(),
                    "status ".to_string()
                ]
            )
        );
        // Bastion names only once the supervisor named some.
        assert_eq!(complete("eip rotate "), (11, Vec::new()));
        let mut known = completions();
        known.set_bastions(vec!["bastion-1".into(), "bastion-2".into(), "edge".into()]);
        let names = |line: &str| {
            let (start, candidates) = known.complete(line, line.len());
            let names: Vec<String> = candidates
                .into_iter()
                .map(|candidate| candidate.replacement)
                .collect();
            (start, names)
        };
        assert_eq!(
            names("eip rotate "),
            (
                11,
                vec![
                    "bastion-1 ".to_string(),
                    "bastion-2 ".to_string(),
                    "edge ".to_string()
                ]
            )
        );
        assert_eq!(
            names("eip rotate --keep-old b"),
            (22, vec!["bastion-1 ".to_string(), "bastion-2 ".to_string()])
        );
        assert_eq!(names("eip rotate e"), (11, vec!["edge ".to_string()]));
        assert_eq!(names("eip rotate edge "), (16, Vec::new()));
        assert_eq!(
            names("eip rotate edge --"),
            (
                16,
                vec![
                    "--help ".to_string(),
                    "--json ".to_string(),
                    "--keep-old ".to_string()
                ]
            )
        );
        // Nowhere else.
        assert_eq!(names("eip status "), (11, Vec::new()));
        assert_eq!(names("restore "), (8, Vec::new()));
        assert_eq!(complete("call 'tun"), (9, Vec::new()));
        // In the middle of a line: the word before the cursor.
        let (start, candidates) = completions().complete("node st --json", 7);
        assert_eq!(start, 5);
        assert_eq!(candidates.len(), 2);
    }

    fn hint(line: &str) -> Option<ShellHint> {
        completions().hint(line, line.len())
    }

    #[test]
    fn hints() {
        assert_eq!(
            hint("sta"),
            Some(ShellHint {
                display: "tus".into(),
                completion: Some("tus".into())
            })
        );
        assert_eq!(
            hint("upgrade a"),
            Some(ShellHint {
                display: "dd <NAME> <--url <URL>|--path <FILE>> [--checksum <CHECKSUM>]".into(),
                completion: Some("dd".into())
            })
        );
        assert_eq!(
            hint("upgrade add ").unwrap().display,
            "<NAME> <--url <URL>|--path <FILE>> [--checksum <CHECKSUM>]"
        );
        assert_eq!(
            hint("node ").map(|hint| hint.display),
            Some("start|stop|restart".into())
        );
        assert_eq!(
            hint("call ").map(|hint| hint.display),
            Some("<METHOD> [--params <JSON>] [--unchecked]".into())
        );
        assert_eq!(
            hint("logs --li"),
            Some(ShellHint {
                display: "nes <LINES>".into(),
                completion: Some("nes".into())
            })
        );
        assert_eq!(
            hint("logs --lines ").map(|hint| hint.display),
            Some("<LINES>".into())
        );
        assert_eq!(
            hint("connect ").map(|hint| hint.display),
            Some("val-a|val-b".into())
        );
        assert_eq!(
            hint("hel").map(|hint| hint.display),
            Some("p [COMMAND]".into())
        );
        assert_eq!(
            hint("eip ").map(|hint| hint.display),
            Some("list|rotate|status".into())
        );
        assert_eq!(
            hint("eip rot"),
            Some(ShellHint {
                display: "ate <BASTION> [--keep-old]".into(),
                completion: Some("ate".into())
            })
        );
        assert_eq!(
            hint("eip rotate ").map(|hint| hint.display),
            Some("<BASTION> [--keep-old]".into())
        );
        assert_eq!(hint("status"), None);
        assert_eq!(hint("status "), None);
        // Unique among the commands (and `shell` is not offered in the shell).
        assert_eq!(
            hint("tun").and_then(|hint| hint.completion),
            Some("nels".into())
        );
        assert_eq!(hint("node st"), None, "start or stop");
        assert_eq!(hint(""), None);
        assert_eq!(completions().hint("sta", 2), None, "cursor not at the end");
    }

    #[test]
    fn history_keeps_no_secrets() {
        for line in [
            "status",
            "logs --lines 20",
            "unlock",
            "unlock --json",
            "node stop",
        ] {
            assert_eq!(history_entry(line), Some(line), "{line}");
        }
        assert_eq!(history_entry("status   "), Some("status"));
        for line in [
            "",
            "   ",
            " status",
            "exit",
            "quit",
            "unlock hunter2",
            "unlock --passphrase hunter2",
            "unlock --passphrase-stdin",
            "call vault.unlock",
            "call x --params '{\"password\":\"x\"}'",
            "call x --params '{\"Secret\":\"x\"}'",
            "call host.shutdown --params '{\"token\":\"x\"}'",
            "call x --params '{\"mnemonic\":\"a b c\"}'",
        ] {
            assert_eq!(history_entry(line), None, "{line:?}");
        }
    }

    #[test]
    fn history_location_and_permissions() {
        assert_eq!(
            default_history_path(Some("/state".into()), Some("/home/a".into())),
            Some(PathBuf::from("/state/palisade/ctl_history"))
        );
        assert_eq!(
            default_history_path(Some("relative".into()), Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.local/state/palisade/ctl_history"))
        );
        assert_eq!(
            default_history_path(None, Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.local/state/palisade/ctl_history"))
        );
        assert_eq!(default_history_path(None, Some("".into())), None);
        assert_eq!(default_history_path(None, None), None);

        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let path = dir.path().join("state/palisade/ctl_history");
        prepare_history(&path, true).unwrap();
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // A loose directory and file of ours are tightened.
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(&path, "status\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_history(&path, true).unwrap();
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        // A directory named by --history-file is left as it is.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_history(&shared.join("h"), false).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert!(
            prepare_history(&shared, false).is_err(),
            "a directory is no history file"
        );
    }

    #[test]
    fn colours_only_on_a_capable_terminal() {
        use std::ffi::OsStr;
        let style = |stdout, term: Option<&str>, no_color: Option<&str>| {
            Style::from_env(
                stdout,
                stdout,
                term.map(OsStr::new),
                no_color.map(OsStr::new),
                Some(OsStr::new("C.UTF-8")),
            )
        };
        assert!(style(true, Some("xterm-256color"), None).color);
        assert!(style(true, Some("xterm"), Some("")).color);
        assert!(!style(false, Some("xterm"), None).color);
        assert!(!style(true, Some("dumb"), None).color);
        assert!(!style(true, None, None).color);
        assert!(!style(true, Some("xterm"), Some("1")).color);
        let plain = style(true, Some("dumb"), None);
        let (raw, styled) = plain.prompt("val-a", Some("running"));
        assert_eq!(raw, "val-a (running) ▸ ");
        assert_eq!(styled, raw);
        let (raw, styled) = style(true, Some("xterm"), None).prompt("val-a", None);
        assert_eq!(raw, "val-a ▸ ");
        assert!(
            styled.contains('\x1b') && styled.contains("val-a"),
            "{styled}"
        );
        let ascii = Style::from_env(false, false, None, None, Some(OsStr::new("C")));
        assert_eq!(ascii.prompt("val-a", None).0, "val-a > ");
    }

    #[test]
    fn help_lists_every_command_once() {
        let text = help_list(&line_grammar());
        for name in [
            "status",
            "health",
            "logs",
            "unlock",
            "lock",
            "upgrade add|cancel",
            "node start|stop|restart",
            "call",
            "help [COMMAND]",
            "connect [NAME]",
            "exit, quit",
        ] {
            assert!(text.contains(&format!("  {name} ")), "{name}: {text}");
        }
        assert!(!text.contains("  shell "), "{text}");
        assert!(text.contains("Unlock the key vault"), "{text}");
        assert_eq!(
            one_line(Some("Unlock the key vault. The passphrase…".into())),
            "Unlock the key vault"
        );
        assert_eq!(
            one_line(Some("Show upgrades: with --home, the record".into())),
            "Show upgrades"
        );
        assert_eq!(fit("short", 10), "short");
        assert_eq!(
            fit("Backups per store, newest first", 20),
            "Backups per store…"
        );
        for line in text.lines() {
            assert!(line.chars().count() <= HELP_WIDTH, "{line}");
        }
    }

    #[test]
    fn bastion_names_come_from_answers_and_only_plain_ones() {
        use serde_json::json;
        let tunnel = |name: &str| {
            json!({"name": name, "connected": true, "connected_since": 1, "last_error": null,
                   "last_forward_error": null, "bytes_to_bastion": 0, "bytes_from_bastion": 0,
                   "reconnects": 0, "stopped": false})
        };
        let tunnels = json!([
            tunnel("bastion-1"),
            tunnel("b2\u{1b}[2J"),
            tunnel("two words"),
            tunnel("--json"),
            tunnel(""),
            tunnel("it's"),
            tunnel("b\u{202e}3"),
            tunnel("bastion-4"),
        ]);
        let plain = vec!["bastion-1".to_string(), "bastion-4".to_string()];
        assert_eq!(
            bastion_names("status", &json!({"node": {}, "tunnels": tunnels.clone()})),
            Some((false, plain.clone()))
        );
        assert_eq!(
            bastion_names("tunnel.list", &json!({"tunnels": tunnels})),
            Some((false, plain))
        );
        let list = json!({"bastions": [
            {"bastion": "edge", "instance_id": "i-1", "network_interface_id": null,
             "dialing": "54.1.2.3", "addresses": []},
        ]});
        assert_eq!(
            bastion_names("eip.list", &list),
            Some((true, vec!["edge".to_string()]))
        );
        // Other answers, or answers of another shape, name none.
        assert_eq!(bastion_names("health", &json!({"ok": true})), None);
        assert_eq!(bastion_names("status", &json!({"node": {}})), None);
        assert_eq!(bastion_names("eip.list", &json!({"bastions": 3})), None);
        let many: Vec<Value> = (0..100).map(|n| tunnel(&format!("b{n}"))).collect();
        let (_, names) = bastion_names("tunnel.list", &json!({ "tunnels": many })).unwrap();
        assert_eq!(names.len(), MAX_BASTIONS);
    }

    #[test]
    fn node_state_is_cleaned_for_the_prompt() {
        let status = serde_json::json!({"node": {"state": "running\u{1b}[2J"}});
        assert_eq!(node_state(&status).unwrap(), "running\\u{1b}[2J");
        assert_eq!(node_state(&serde_json::json!({"node": {}})), None);
        assert_eq!(short(&"x".repeat(40)).chars().count(), 33);
    }
}
