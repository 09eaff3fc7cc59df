//! `keygate_core::token::Keyring::verify`: a Bearer value is any text a client sends.
//!
//! Three shapes of input, by the first line:
//! - anything else: the whole input is a token. Verification may only succeed for a token that an
//!   independent HMAC-SHA256 check (below) also accepts, with `alg` HS256, a known `kid` and `exp`
//!   in the future; garbage is refused (a keyring with no keys refuses everything).
//! - `signed`, then a header line and a payload (any bytes, usually JSON), signed with the right
//!   key for the header's `kid` (else `k1`): what gets past the signature must still be HS256, a
//!   known kid, and claims of the right types with `exp` in the future.
//! - `issue`, then a line of claims as JSON (`id`, `cid`, `uid`, `gen`, `exp`, `iat`, `kind`,
//!   `email`, `firstName`, `code`, `jti`, `signer`: each optional), then edits, one a line:
//!   `xor POS BYTE`, `trunc LEN`, `ins POS TEXT`, `del POS`, `seg INDEX TEXT`, `seg64 INDEX TEXT`
//!   (TEXT base64url-encoded), `swap A B`, `nosig`, `append TEXT`. The token the keyring issues
//!   for those claims verifies to them (or is expired); once the edits change its text, it is
//!   refused.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use keygate_core::token::{Claims, Keyring, TokenError};
use keygate_core::{AccountId, ClientId, MasterKey};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// A fixed key so that a crash reproduces; no input can carry a signature made with it by chance.
const MASTER: &str = "3f1c9a7e5b2d4f6081a3c5e7092b4d6f8a1c3e5f7092b4d6f8a1c3e5f7092b4d";
const NOW: i64 = 1_700_000_000;
const KIDS: [&str; 2] = ["k1", "k2"];

struct Rings {
    master: MasterKey,
    ring: Keyring,
    empty: Keyring,
}

fn rings() -> &'static Rings {
    static RINGS: OnceLock<Rings> = OnceLock::new();
    RINGS.get_or_init(|| {
        let master = MasterKey::from_hex(MASTER).expect("hex master key");
        let ring = Keyring::new(&master, KIDS, Some("k2"));
        let empty = Keyring::new(&master, [], None);
        Rings { master, ring, empty }
    })
}

fn secret_for(kid: Option<&str>) -> Option<[u8; 32]> {
    kid.filter(|k| KIDS.contains(k)).map(|k| rings().master.jwt_secret(k))
}

fn hmac(secret: &[u8; 32], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// What a correct HS256 verifier accepts, written independently of jsonwebtoken.
fn independently_valid(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else { return false };
    let (Ok(header), Ok(payload), Ok(sig)) = (B64.decode(h), B64.decode(p), B64.decode(s)) else { return false };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header) else { return false };
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return false;
    }
    let Some(secret) = secret_for(header.get("kid").and_then(|k| k.as_str())) else { return false };
    if hmac(&secret, format!("{h}.{p}").as_bytes()) != sig {
        return false;
    }
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&payload) else { return false };
    claims.get("exp").and_then(|e| e.as_i64()).is_some_and(|exp| exp > NOW)
}

fn check_raw(token: &str) {
    let r = rings();
    assert!(r.empty.verify(token, NOW).is_err(), "a keyring with no keys accepted {token:?}");
    if let Ok(subject) = r.ring.verify(token, NOW) {
        assert!(independently_valid(token), "accepted a token a plain HS256 check refuses: {token:?}");
        assert!(subject.exp > NOW);
    }
}

fn check_signed(header: &[u8], payload: &[u8]) {
    let kid = serde_json::from_slice::<serde_json::Value>(header)
        .ok()
        .and_then(|v| v.get("kid").and_then(|k| k.as_str()).map(str::to_owned));
    let (h, p) = (B64.encode(header), B64.encode(payload));
    let secret = secret_for(kid.as_deref()).unwrap_or_else(|| rings().master.jwt_secret("k1"));
    let sig = B64.encode(hmac(&secret, format!("{h}.{p}").as_bytes()));
    let token = format!("{h}.{p}.{sig}");
    let result = rings().ring.verify(&token, NOW);
    if let Ok(subject) = result {
        let header: serde_json::Value = serde_json::from_slice(header).expect("accepted header is JSON");
        assert_eq!(header["alg"], "HS256", "accepted alg {:?}", header["alg"]);
        assert!(KIDS.contains(&header["kid"].as_str().expect("accepted kid is a string")));
        assert!(subject.exp > NOW);
        let claims: serde_json::Value = serde_json::from_slice(payload).expect("accepted payload is JSON");
        assert_eq!(claims["uid"].as_i64(), Some(subject.uid));
        assert_eq!(claims["exp"].as_i64(), Some(subject.exp));
        assert_eq!(claims["gen"].as_u64(), Some(subject.generation as u64));
        assert_eq!(claims["id"].as_str(), Some(subject.account_id.to_hex().as_str()));
        assert_eq!(claims["cid"].as_str(), Some(subject.client_id.to_hex().as_str()));
    }
    check_raw(&token);
}

fn claims_from(line: &str) -> (Claims, bool) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let text = |k: &str, d: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or(d).to_owned();
    let int = |k: &str, d: i64| v.get(k).and_then(|n| n.as_i64()).unwrap_or(d);
    let claims = Claims {
        id: AccountId::parse(&text("id", "")).unwrap_or_else(|_| AccountId::parse("64db241f6d9e5c4bd136c187").unwrap()),
        kind: text("kind", "user"),
        from: "keygate".into(),
        email: text("email", "a@b.c"),
        first_name: text("firstName", "A"),
        uid: int("uid", 7),
        code: text("code", "c187"),
        iat: int("iat", NOW - 10),
        exp: int("exp", NOW + 3600),
        cid: ClientId::parse(&text("cid", "")).unwrap_or_else(|_| ClientId::parse("64db241f6d9e5c4bd136c188").unwrap()),
        generation: v.get("gen").and_then(|n| n.as_u64()).and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
        jti: text("jti", "j"),
    };
    (claims, text("signer", "k2") == "k1")
}

fn segments(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|b| *b == b'.').map(<[u8]>::to_vec).collect()
}

fn edit(bytes: &mut Vec<u8>, line: &str) {
    let (op, args) = line.split_once(' ').unwrap_or((line, ""));
    let num = |s: &str| s.trim().parse::<usize>().unwrap_or(0);
    let (a, rest) = args.split_once(' ').unwrap_or((args, ""));
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match op {
        "xor" => {
            if !bytes.is_empty() {
                let i = at(num(a), bytes.len());
                bytes[i] ^= num(rest) as u8;
            }
        }
        "trunc" => bytes.truncate(num(a)),
        "ins" => {
            let i = at(num(a), bytes.len() + 1);
            bytes.splice(i..i, rest.bytes());
        }
        "del" => {
            if !bytes.is_empty() {
                let i = at(num(a), bytes.len());
                bytes.remove(i);
            }
        }
        "seg" | "seg64" => {
            let mut parts = segments(bytes);
            let i = num(a) % parts.len();
            parts[i] = if op == "seg" { rest.as_bytes().to_vec() } else { B64.encode(rest).into_bytes() };
            *bytes = parts.join(&b'.');
        }
        "swap" => {
            let mut parts = segments(bytes);
            let (x, y) = (num(a) % parts.len(), num(rest) % parts.len());
            parts.swap(x, y);
            *bytes = parts.join(&b'.');
        }
        "nosig" => {
            if let Some(dot) = bytes.iter().rposition(|b| *b == b'.') {
                bytes.truncate(dot + 1);
            }
        }
        "append" => bytes.extend_from_slice(args.as_bytes()),
        _ => {}
    }
}

fn check_issued(claims_line: &str, edits: &str) {
    let r = rings();
    let (claims, by_k1) = claims_from(claims_line);
    let k1 = Keyring::new(&r.master, KIDS, Some("k1"));
    let ring = if by_k1 { &k1 } else { &r.ring };
    let token = ring.issue(&claims).expect("a keyring with an active kid signs");
    match r.ring.verify(&token, NOW) {
        Ok(s) => {
            assert!(claims.exp > NOW);
            assert_eq!(
                (s.account_id, s.client_id, s.uid, s.generation, s.exp),
                (claims.id, claims.cid, claims.uid, claims.generation, claims.exp)
            );
        }
        Err(e) => {
            assert!(claims.exp <= NOW, "issued token refused: {e:?}");
            assert_eq!(e, TokenError::Expired);
        }
    }
    let mut bytes = token.clone().into_bytes();
    for line in edits.lines().take(16) {
        edit(&mut bytes, line);
    }
    let edited = String::from_utf8_lossy(&bytes);
    if edited != token {
        let result = r.ring.verify(&edited, NOW);
        assert!(result.is_err(), "an edited token verified: {token:?} -> {edited:?}");
    }
    check_raw(&edited);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    match first {
        "signed" => {
            let (header, payload) = rest.split_once('\n').unwrap_or((rest, ""));
            check_signed(header.as_bytes(), payload.as_bytes());
        }
        "issue" => {
            let (claims, edits) = rest.split_once('\n').unwrap_or((rest, ""));
            check_issued(claims, edits);
        }
        _ => check_raw(&text),
    }
});
