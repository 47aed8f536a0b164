#!/usr/bin/env python3
"""Regenerates the derived golden files of the conformance set.

Each file's shape follows the upstream source named in README.md; this
script only fills them with consistent values: keys from fixed seeds, a
precommit signed for real, and a /status and /commit that agree with the
keys and the sign state. Run from anywhere: `python3 conformance/generate.py`
(needs the `cryptography` package). `--check` rewrites nothing and exits 1
if any file differs from what it would write.

config.toml is not generated here: it is CometBFT's own template output
(see README.md for how to re-check it).
"""

import base64
import hashlib
import json
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent
CHAIN_ID = "cosmoshub-4"
HEIGHT = 25010342  # the block our validator last precommitted
ROUND = 0
UPGRADE_NAME = "v25"
UPGRADE_HEIGHT = 25010343
BINARIES_INFO = (
    '{"binaries":{'
    '"linux/amd64":"https://github.com/cosmos/gaia/releases/download/v25.0.0/gaiad-v25.0.0-linux-amd64'
    '?checksum=sha256:9c2f5d1f4c6e1b7a0f3e2d5c8b9a6f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a",'
    '"linux/arm64":"https://github.com/cosmos/gaia/releases/download/v25.0.0/gaiad-v25.0.0-linux-arm64'
    '?checksum=sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"}}'
)

# The same binaries, as JSON with a space after each colon and comma: how
# the plan's info looked in a real upgrade-info.json quoted in
# cosmos/cosmos-sdk issue #16476 (SDK v0.47). On the console the info then
# holds spaces, so it is more than the first token after the height.
BINARIES_INFO_SPACED = json.dumps(json.loads(BINARIES_INFO))
AMPERSAND_INFO = (
    '{"binaries":{"linux/amd64":"https://downloads.example.org/gaiad-v25.0.0-linux-amd64'
    '?X-Amz-Expires=604800&X-Amz-Signature=5f1d&checksum=sha256:'
    '9c2f5d1f4c6e1b7a0f3e2d5c8b9a6f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a"}}'
)


def seed(label):
    return hashlib.sha256(b"palisade conformance " + label.encode()).digest()


class Key:
    def __init__(self, label):
        self.seed = seed(label)
        self.private = Ed25519PrivateKey.from_private_bytes(self.seed)
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        # crypto/ed25519: Address = SHA256(pubkey)[:20].
        self.address = hashlib.sha256(self.public).digest()[:20]

    def priv_value(self):
        # crypto/ed25519: a PrivKey is the 32-byte seed followed by the public key.
        return base64.b64encode(self.seed + self.public).decode()

    def pub_value(self):
        return base64.b64encode(self.public).decode()

    def sign(self, message):
        return self.private.sign(message)


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number, value):
    return b"" if value == 0 else varint(number << 3) + varint(value)


def field_sfixed64(number, value):
    return b"" if value == 0 else varint(number << 3 | 1) + struct.pack("<q", value)


def vote_sign_bytes(chain_id, height, round_, block_hash, parts_total, parts_hash, when, nanos):
    """types.VoteSignBytes: the length-delimited CanonicalVote
    (proto/tendermint/types/canonical.proto), precommit (type 2)."""
    part_set_header = field_varint(1, parts_total) + field_bytes(2, parts_hash)
    block_id = field_bytes(1, block_hash) + field_bytes(2, part_set_header)
    timestamp = field_varint(1, when) + field_varint(2, nanos)
    vote = (
        field_varint(1, 2)
        + field_sfixed64(2, height)
        + field_sfixed64(3, round_)
        + field_bytes(4, block_id)
        + field_bytes(5, timestamp)
        + field_bytes(6, chain_id.encode())
    )
    return varint(len(vote)) + vote


def rfc3339_nano(seconds, nanos):
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    base = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return base + (("." + fraction) if fraction else "") + "Z"


def h(label):
    return hashlib.sha256(label.encode()).digest()


def upper_hex(data):
    return data.hex().upper()


def indent_json(value):
    # cmtjson.MarshalIndent(v, "", "  "): Go's indentation, no trailing newline.
    return json.dumps(value, indent=2, separators=(",", ": "))


def compact_json(value):
    return json.dumps(value, separators=(",", ":"))


def build():
    files = {}
    validator = Key("priv_validator_key")
    node = Key("node_key")
    others = [Key("validator 2"), Key("validator 3")]

    # privval/file.go FilePVKey.Save: MarshalIndent, fields address, pub_key, priv_key.
    files["cometbft-v0.38/priv_validator_key.json"] = indent_json(
        {
            "address": upper_hex(validator.address),
            "pub_key": {"type": "tendermint/PubKeyEd25519", "value": validator.pub_value()},
            "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": validator.priv_value()},
        }
    )
    # p2p/key.go NodeKey.SaveAs: cmtjson.Marshal (compact), one field.
    files["cometbft-v0.38/node_key.json"] = compact_json(
        {"priv_key": {"type": "tendermint/PrivKeyEd25519", "value": node.priv_value()}}
    )

    block_hash = h(f"block {HEIGHT}")
    parts_hash = h(f"parts {HEIGHT}")
    vote_seconds, vote_nanos = 1796047407, 511922473  # 2026-11-30T14:03:27.511922473Z
    sign_bytes = vote_sign_bytes(CHAIN_ID, HEIGHT, ROUND, block_hash, 1, parts_hash, vote_seconds, vote_nanos)
    signature = validator.sign(sign_bytes)

    # privval/file.go FilePVLastSignState: height int64 as a string, round,
    # step (3 = precommit), signature base64, signbytes upper-case hex.
    files["cometbft-v0.38/priv_validator_state.initial.json"] = indent_json(
        {"height": "0", "round": 0, "step": 0}
    )
    files["cometbft-v0.38/priv_validator_state.signed.json"] = indent_json(
        {
            "height": str(HEIGHT),
            "round": ROUND,
            "step": 3,
            "signature": base64.b64encode(signature).decode(),
            "signbytes": upper_hex(sign_bytes),
        }
    )
    # Refused by CometBFT's libs/json decoder ("invalid 64-bit integer
    # encoding ..., expected string") and by Go's encoding/json for round.
    files["cometbft-v0.38/invalid/priv_validator_state.height-number.json"] = indent_json(
        {"height": HEIGHT, "round": ROUND, "step": 3}
    )
    files["cometbft-v0.38/invalid/priv_validator_state.round-string.json"] = indent_json(
        {"height": str(HEIGHT), "round": "0", "step": 3}
    )

    header_seconds, header_nanos = 1796047406, 93812211
    commit_sigs = []
    signers = [validator, others[0]]
    for index, key in enumerate(signers):
        nanos = vote_nanos if key is validator else vote_nanos + 1_234_567 * (index + 1)
        message = vote_sign_bytes(CHAIN_ID, HEIGHT, ROUND, block_hash, 1, parts_hash, vote_seconds, nanos)
        commit_sigs.append(
            {
                "block_id_flag": 2,
                "validator_address": upper_hex(key.address),
                "timestamp": rfc3339_nano(vote_seconds, nanos),
                "signature": base64.b64encode(key.sign(message)).decode(),
            }
        )
    # An absent validator: types.NewCommitSigAbsent (flag 1, empty address,
    # zero time, nil signature).
    commit_sigs.append(
        {
            "block_id_flag": 1,
            "validator_address": "",
            "timestamp": "0001-01-01T00:00:00Z",
            "signature": None,
        }
    )
    # Signatures are ordered as the validator set (by power, then address);
    # keep ours first, as the highest power here.
    header = {
        # proto/tendermint/version Consensus: both fields `omitempty`, which
        # libs/json honours, so an app version of 0 is left out.
        "version": {"block": "11"},
        "chain_id": CHAIN_ID,
        "height": str(HEIGHT),
        "time": rfc3339_nano(header_seconds, header_nanos),
        "last_block_id": {
            "hash": upper_hex(h(f"block {HEIGHT - 1}")),
            "parts": {"total": 1, "hash": upper_hex(h(f"parts {HEIGHT - 1}"))},
        },
        "last_commit_hash": upper_hex(h("last_commit_hash")),
        "data_hash": upper_hex(hashlib.sha256(b"").digest()),
        "validators_hash": upper_hex(h("validators_hash")),
        "next_validators_hash": upper_hex(h("validators_hash")),
        "consensus_hash": upper_hex(h("consensus_hash")),
        "app_hash": upper_hex(h(f"app_hash {HEIGHT}")),
        "last_results_hash": upper_hex(h("last_results_hash")),
        "evidence_hash": upper_hex(hashlib.sha256(b"").digest()),
        "proposer_address": upper_hex(others[0].address),
    }
    commit = {
        "jsonrpc": "2.0",
        "id": -1,
        "result": {
            "signed_header": {
                "header": header,
                "commit": {
                    "height": str(HEIGHT),
                    "round": ROUND,
                    "block_id": {
                        "hash": upper_hex(block_hash),
                        "parts": {"total": 1, "hash": upper_hex(parts_hash)},
                    },
                    "signatures": commit_sigs,
                },
            },
            "canonical": True,
        },
    }
    # rpc/jsonrpc/server/http_server.go writes json.Marshal: compact, no newline.
    files["cometbft-v0.38/commit.json"] = compact_json(commit)

    node_id = hashlib.sha256(node.public).digest()[:20].hex()
    status = {
        "jsonrpc": "2.0",
        "id": -1,
        "result": {
            "node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "id": node_id,
                "listen_addr": "tcp://0.0.0.0:26656",
                "network": CHAIN_ID,
                "version": "0.38.25",
                "channels": "40202122233038606100",
                "moniker": "palisade-conformance",
                "other": {"tx_index": "on", "rpc_address": "tcp://127.0.0.1:26657"},
            },
            "sync_info": {
                "latest_block_hash": upper_hex(block_hash),
                "latest_app_hash": upper_hex(h(f"app_hash {HEIGHT}")),
                "latest_block_height": str(HEIGHT),
                "latest_block_time": rfc3339_nano(header_seconds, header_nanos),
                "earliest_block_hash": upper_hex(h("block 24939001")),
                "earliest_app_hash": upper_hex(h("app_hash 24939001")),
                "earliest_block_height": "24939001",
                "earliest_block_time": rfc3339_nano(1795617000, 250000000),
                "catching_up": False,
            },
            "validator_info": {
                "address": upper_hex(validator.address),
                "pub_key": {"type": "tendermint/PubKeyEd25519", "value": validator.pub_value()},
                "voting_power": "12345678",
            },
        },
    }
    files["cometbft-v0.38/status.json"] = compact_json(status)

    # x/upgrade keeper DumpUpgradeInfoToDisk: json.Marshal of types.Plan
    # {Name, Height, Info}: name, time (zero, not omitempty), height (a JSON
    # number), info (omitempty); upgraded_client_state nil, omitted.
    plan = {"name": UPGRADE_NAME, "time": "0001-01-01T00:00:00Z", "height": UPGRADE_HEIGHT}
    files["sdk-v0.50/upgrade-info.json"] = compact_json(plan)
    files["sdk-v0.50/upgrade-info.binaries.json"] = compact_json({**plan, "info": BINARIES_INFO})
    files["sdk-v0.50/upgrade-info.binaries-spaced.json"] = compact_json(
        {**plan, "info": BINARIES_INFO_SPACED}
    )
    # Go's json.Marshal escapes &, < and > in strings as \u0026, \u003c,
    # \u003e: a binaries URL with a query string of its own (a presigned
    # download URL) reaches the file escaped.
    files["sdk-v0.50/upgrade-info.html-escaped.json"] = (
        compact_json({**plan, "info": AMPERSAND_INFO})
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )
    # os.WriteFile is not atomic: a reader can see the first bytes only.
    whole = compact_json({**plan, "info": BINARIES_INFO})
    files["sdk-v0.50/incomplete/upgrade-info.truncated.json"] = whole[:57]
    # SDK v0.45/v0.46 DumpUpgradeInfoWithInfoToDisk: upgradeInfo{Name, Height, Info}, no time.
    files["older/upgrade-info.sdk-v0.46.json"] = compact_json(
        {"name": "v9-Lambda", "height": 14470501, "info": BINARIES_INFO}
    )
    # The plan as `gaiad q upgrade plan -o json` prints it (proto JSON: an
    # int64 is a string), the form operators copy into the file by hand.
    files["older/upgrade-info.height-string.json"] = compact_json(
        {"name": UPGRADE_NAME, "time": "0001-01-01T00:00:00Z", "height": str(UPGRADE_HEIGHT), "info": ""}
    )

    # x/upgrade BuildUpgradeNeededMsg: UPGRADE "name" NEEDED at height: H: info
    def message(info):
        return f'UPGRADE "{UPGRADE_NAME}" NEEDED at height: {UPGRADE_HEIGHT}: {info}'

    def bold(text):
        return f"\x1b[1m{text}\x1b[0m"

    def colour(code, text):
        return f"\x1b[{code}m{text}\x1b[0m"

    for kind, info in (
        ("empty-info", ""),
        ("binaries", BINARIES_INFO),
        ("binaries-spaced", BINARIES_INFO_SPACED),
    ):
        text = message(info)
        # cosmossdk.io/log (zerolog v1.32/v1.33 ConsoleWriter, time.Kitchen):
        # time, level, message, then the fields sorted, each part joined by
        # one space; module=x/upgrade from the keeper's logger (the
        # baseapp's module=baseapp is overridden: the console writer decodes
        # the event into a map, last key wins).
        files[f"sdk-v0.50/upgrade-line.plain.{kind}.log"] = f"2:03PM ERR {text} module=x/upgrade\n"
        files[f"sdk-v0.50/upgrade-line.color.{kind}.log"] = (
            f"{colour(90, '2:03PM')} {colour(31, 'ERR')} {bold(text)} {colour(36, 'module=')}x/upgrade\n"
        )
        # log_format = "json": zerolog's JSON, fields in the order written:
        # level, the context (module=baseapp from NewBaseApp, then
        # module=x/upgrade from the keeper: both kept), time (the Timestamp
        # hook, RFC 3339), message.
        json_line = (
            '{"level":"error","module":"baseapp","module":"x/upgrade",'
            '"time":"2026-11-30T14:03:28Z","message":' + json.dumps(text) + "}\n"
        )
        files[f"sdk-v0.50/upgrade-line.json.{kind}.log"] = json_line
        # SDK v0.47 and before (zerolog <= v1.29 ConsoleWriter): the level is
        # red then bold, the message plain; no module field is guaranteed.
        if kind == "binaries-spaced":
            continue
        files[f"older/upgrade-line.sdk-v0.47.color.{kind}.log"] = (
            f"{colour(90, '2:03PM')} {bold(colour(31, 'ERR'))} {text}\n"
        )
        # Tendermint-era SDK (v0.40-v0.42, Tendermint v0.34 loggers), the
        # server logger carrying module=main:
        # libs/log/tmfmt_logger.go: level initial, time, the message padded
        # to 44 columns, a space, module=..., a space, then the newline.
        files[f"older/upgrade-line.tendermint.plain.{kind}.log"] = (
            f"E[2021-05-18|12:00:00.123] {text:<44} module=main \n"
        )
        # libs/log/tm_json_logger.go: go-kit's JSON logger, a map encoded by
        # encoding/json (keys sorted, HTML not escaped), message under _msg,
        # ts in RFC 3339 with nanoseconds, UTC.
        files[f"older/upgrade-line.tendermint.json.{kind}.log"] = (
            json.dumps(
                {"_msg": text, "level": "error", "module": "main", "ts": "2021-05-18T12:00:00.123456789Z"},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            + "\n"
        )
    return files


def main():
    check = "--check" in sys.argv[1:]
    differs = []
    for name, text in sorted(build().items()):
        path = ROOT / name
        data = text.encode()
        if check:
            if not path.exists() or path.read_bytes() != data:
                differs.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print("wrote", name)
    if differs:
        print("differ from generate.py:", *differs, sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
