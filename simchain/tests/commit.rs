//! `/commit` as `simd` and a `simchain-net` sentry serve it, against the golden
//! `conformance/cometbft-v0.38/commit.json` (what CometBFT v0.38 answers): the same keys in the
//! same order at every level and the same kinds of values; signatures that verify with the
//! validators' keys over the precommit sign bytes; the validator set in CometBFT's order; an
//! absent validator as `NewCommitSigAbsent`; `canonical` as `rpc/core/blocks.go` sets it; and
//! `getHeight`'s errors (`rpc/core/env.go`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use palisade_simchain::key::decode_pub_key;
use palisade_simchain::network::internal_validator_key;
use palisade_simchain::testkit::{
    ListenerOptions, SimNetwork, SimNetworkOptions, SimdProcess, ValidatorKeyInfo, free_port,
    rpc_get, write_validator_home,
};
use palisade_simchain::vote::commit_precommit;

const WAIT: Duration = Duration::from_secs(30);
const CHAIN_ID: &str = "sim-1";

fn simd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simd"))
}

fn net_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simchain-net"))
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cometbft-v0.38/commit.json")
}

/// A JSON document's shape with its keys in document order (serde_json's `Value` sorts them).
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Null,
    Bool,
    /// Kept as text so signature entries can be matched by their flag.
    Number(String),
    String(String),
    Array(Vec<Shape>),
    Object(Vec<(String, Shape)>),
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_none<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Bool)
            }
            fn visit_i64<E>(self, value: i64) -> Result<Shape, E> {
                Ok(Shape::Number(value.to_string()))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Shape, E> {
                Ok(Shape::Number(value.to_string()))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Shape, E> {
                Ok(Shape::Number(value.to_string()))
            }
            fn visit_str<E>(self, value: &str) -> Result<Shape, E> {
                Ok(Shape::String(value.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Shape::Object(entries))
            }
        }
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// `int64` as a string, `round` a number…: strings are compared as "decimal string" or
/// "other string", so a height written as a number or a word shows up.
fn same_shape(path: &str, ours: &Shape, golden: &Shape) {
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (ours, golden) {
        (Shape::Object(a), Shape::Object(b)) => {
            let keys = |o: &[(String, Shape)]| o.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b), "keys at {path}");
            for ((key, x), (_, y)) in a.iter().zip(b) {
                same_shape(&format!("{path}.{key}"), x, y);
            }
        }
        (Shape::Array(a), Shape::Array(b)) => {
            // Signatures: each of ours against a golden entry with the same flag.
            for (index, x) in a.iter().enumerate() {
                let flag = field(x, "block_id_flag").cloned();
                let y = b
                    .iter()
                    .find(|y| field(y, "block_id_flag").cloned() == flag)
                    .unwrap_or(&b[0]);
                same_shape(&format!("{path}[{index}]"), x, y);
            }
        }
        (Shape::String(a), Shape::String(b)) => {
            assert_eq!(
                decimal(a),
                decimal(b),
                "string kind at {path}: {a:?} vs {b:?}"
            );
        }
        (a, b) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "value kind at {path}: {a:?} vs {b:?}"
        ),
    }
}

fn field<'a>(shape: &'a Shape, name: &str) -> Option<&'a Shape> {
    match shape {
        Shape::Object(entries) => entries.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        _ => None,
    }
}

fn get_json(addr: &str, path: &str) -> (u16, String, serde_json::Value) {
    let (status, body) = rpc_get(addr, path).unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, body, value)
}

struct Chain {
    _dir: tempfile::TempDir,
    net: SimNetwork,
    val1: ValidatorKeyInfo,
    val2: ValidatorKeyInfo,
    _node: SimdProcess,
}

/// Two external validators (power 10 each) beside three internal ones (100 each); only
/// `val1` runs, started once the chain is past height 3, so its node's block store begins
/// above height 1. Sentry `sentry-a` serves RPC.
fn chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let home = |name: &str| {
        write_validator_home(&dir.path().join(name), name, CHAIN_ID, "", free_port()).unwrap()
    };
    let (val1, val2) = (home("val1"), home("val2"));
    let net = SimNetwork::spawn(
        net_bin(),
        &[val1.clone(), val2.clone()],
        &SimNetworkOptions {
            block_time: Duration::from_millis(100),
            listeners: vec![ListenerOptions {
                name: Some("sentry-a".into()),
                addr: "127.0.0.1:0".into(),
                node_key: None,
                rpc_addr: Some("127.0.0.1:0".into()),
            }],
            ..SimNetworkOptions::default()
        },
    )
    .unwrap();
    net.wait_for_height(4, WAIT).unwrap();
    net.attach_home(&val1.home).unwrap();
    let node = SimdProcess::start(simd(), &val1.home, &[], &[]).unwrap();
    net.wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 4)
        .unwrap();
    Chain {
        _dir: dir,
        net,
        val1,
        val2,
        _node: node,
    }
}

fn verifying_key_of(chain: &Chain, address: &str) -> VerifyingKey {
    if address == chain.val1.address {
        return decode_pub_key(&chain.val1.pub_key).unwrap();
    }
    let internal = (0..3)
        .map(|i| internal_validator_key(CHAIN_ID, i))
        .find(|k| k.address() == address)
        .unwrap_or_else(|| panic!("{address} is not a validator that can sign"));
    VerifyingKey::from_bytes(&internal.pub_key_bytes()).unwrap()
}

/// One `/commit` result checked through: shape, order, signatures, the absent validator.
fn check_commit(chain: &Chain, body: &str, value: &serde_json::Value) {
    let golden_text = std::fs::read_to_string(golden_path()).unwrap();
    let golden: Shape = serde_json::from_str(&golden_text).unwrap();
    let ours: Shape = serde_json::from_str(body).unwrap();
    same_shape("$", &ours, &golden);

    let commit = &value["result"]["signed_header"]["commit"];
    let height: u64 = commit["height"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        value["result"]["signed_header"]["header"]["height"],
        commit["height"]
    );
    let block_hash = commit["block_id"]["hash"].as_str().unwrap();
    assert_eq!(
        block_hash,
        palisade_simchain::protocol::block_id(CHAIN_ID, height)
    );
    let round = commit["round"].as_u64().unwrap() as u32;
    let signatures = commit["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 5, "every validator of the set: {value}");
    // types/validator_set.go: power descending, then address ascending. The internal three
    // (100) come first, then val1 and val2 (10) — val2 absent, so only val1's address shows.
    let internal: Vec<String> = {
        let mut a: Vec<String> = (0..3)
            .map(|i| internal_validator_key(CHAIN_ID, i).address())
            .collect();
        a.sort();
        a
    };
    let addresses: Vec<&str> = signatures
        .iter()
        .map(|s| s["validator_address"].as_str().unwrap())
        .collect();
    assert_eq!(
        &addresses[..3],
        &internal.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    let val1_position = if chain.val1.address < chain.val2.address {
        3
    } else {
        4
    };
    let val2_position = 7 - val1_position;
    assert_eq!(
        signatures[val2_position],
        serde_json::json!({"block_id_flag":1,"validator_address":"","timestamp":"0001-01-01T00:00:00Z","signature":null}),
        "val2 never ran: {value}"
    );
    for sig in signatures.iter().filter(|s| s["block_id_flag"] == 2) {
        let address = sig["validator_address"].as_str().unwrap();
        let sign_bytes = commit_precommit(
            CHAIN_ID,
            height,
            round,
            block_hash,
            sig["timestamp"].as_str().unwrap(),
        )
        .unwrap()
        .sign_bytes();
        let signature: [u8; 64] = B64
            .decode(sig["signature"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        verifying_key_of(chain, address)
            .verify_strict(&sign_bytes, &Signature::from_bytes(&signature))
            .unwrap_or_else(|e| panic!("{address} at {height}: {e}"));
    }
    let flags: Vec<u64> = signatures
        .iter()
        .map(|s| s["block_id_flag"].as_u64().unwrap())
        .collect();
    assert!(
        flags.iter().filter(|f| **f == 2).count() >= 3,
        "the internal validators always sign: {flags:?}"
    );
    assert!(
        flags[val1_position] == 2 || flags[val1_position] == 1,
        "{flags:?}"
    );
}

fn latest_height(addr: &str) -> u64 {
    let (_, _, status) = get_json(addr, "/status");
    status["result"]["sync_info"]["latest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn simd_and_sentry_serve_commit_in_cometbft_shape_with_real_signatures() {
    let chain = chain();
    let simd_rpc = chain.val1.rpc_laddr.clone();
    let sentry = chain.net.listener("sentry-a").unwrap().clone();
    let sentry_rpc = sentry.rpc_addr.clone().expect("sentry-a serves RPC");
    let record = chain.net.record().unwrap();
    let signed_at = record.validators["val1"].last_signed_height.unwrap();

    for addr in [simd_rpc.as_str(), sentry_rpc.as_str()] {
        // A height val1 signed, below the latest: canonical.
        let (status, body, value) = get_json(addr, &format!("/commit?height={}", signed_at - 2));
        assert_eq!(status, 200, "{body}");
        assert_eq!(value["result"]["canonical"], true, "{addr}: {body}");
        check_commit(&chain, &body, &value);

        // No height: the latest, not canonical (the seen commit).
        let (status, body, value) = get_json(addr, "/commit");
        assert_eq!(status, 200, "{body}");
        assert_eq!(value["result"]["canonical"], false, "{addr}: {body}");
        check_commit(&chain, &body, &value);

        // getHeight's refusals, in CometBFT's error shape.
        let (status, body, value) = get_json(addr, "/commit?height=1000000000");
        assert_eq!(status, 500, "{body}");
        assert_eq!(value["error"]["code"], -32603);
        assert_eq!(value["error"]["message"], "Internal error");
        let data = value["error"]["data"].as_str().unwrap();
        assert!(
            data.starts_with(
                "height 1000000000 must be less than or equal to the current blockchain height "
            ),
            "{data}"
        );
        let (_, _, value) = get_json(addr, "/commit?height=0");
        assert_eq!(
            value["error"]["data"],
            "height must be greater than 0, but got 0"
        );
        let (_, body, value) = get_json(addr, "/commit?height=x");
        assert_eq!(value["error"]["code"], -32602, "{body}");
    }

    // simd started late: its block store begins above height 1, as a node's that joined
    // late (or pruned) does.
    let (_, _, status) = get_json(&simd_rpc, "/status");
    let base: u64 = status["result"]["sync_info"]["earliest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(base > 1, "{status}");
    let (status, body, value) = get_json(&simd_rpc, "/commit?height=1");
    assert_eq!(status, 500, "{body}");
    let data = value["error"]["data"].as_str().unwrap();
    assert!(
        data.starts_with("height 1 is not available, lowest height is "),
        "{data}"
    );

    // One chain, one rendering: the node's and the sentry's commit of a block are equal.
    let both = signed_at - 2;
    let (_, _, from_node) = get_json(&simd_rpc, &format!("/commit?height={both}"));
    let (_, _, from_sentry) = get_json(&sentry_rpc, &format!("/commit?height={both}"));
    assert_eq!(
        from_node["result"]["signed_header"],
        from_sentry["result"]["signed_header"]
    );

    // The sentry's /status: the network's view under its own identity.
    let (_, _, status) = get_json(&sentry_rpc, "/status");
    let result = &status["result"];
    assert_eq!(result["node_info"]["id"], sentry.node_id.as_str());
    assert_eq!(result["node_info"]["moniker"], "sentry-a");
    assert_eq!(result["node_info"]["network"], CHAIN_ID);
    assert_eq!(result["sync_info"]["catching_up"], false);
    assert_eq!(result["validator_info"]["voting_power"], "0");
    let latest = latest_height(&sentry_rpc);
    assert!(latest + 1 >= signed_at, "{status}");
    let hash = result["sync_info"]["latest_block_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64, "{status}");
}
