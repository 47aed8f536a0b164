//! Text that came from a peer, made safe to show: the one cleaning
//! function lives in [`palisade_wire::peer_text`], beside the parsers that
//! apply it where such text enters; it is re-exported here for the
//! programs built on this client (palisade-ctl, palisade-bastion), which
//! apply it again to whatever they print.

pub use palisade_wire::peer_text::{clean, escape_json_output, is_unsafe};
