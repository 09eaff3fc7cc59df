//! `ApiKey::parse` / `has_prefix` (and the admin-token check, the same format) on any text: what
//! arrives in `x-api-key`, `x-client-secret`, a Bearer value or getToken's `clientSecret`.
//! Invariants: an accepted key is exactly the input, 32 ASCII characters with our prefix and a
//! checksum that `with_checksum` reproduces; a key built from the input's bytes with its checksum
//! is accepted, and any one character changed in it is refused.
#![no_main]

use keygate_core::ApiKey;
use keygate_core::key::{self, ADMIN_TOKEN_PREFIX, API_KEY_PREFIX, CHECKSUM_LEN, KEY_LEN, RANDOM_LEN};
use libfuzzer_sys::fuzz_target;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    let has_prefix = ApiKey::has_prefix(s);
    assert_eq!(has_prefix, s.starts_with(API_KEY_PREFIX));
    match ApiKey::parse(s) {
        Ok(k) => {
            assert_eq!(k.expose(), s);
            assert!(has_prefix && s.len() == KEY_LEN && s.is_ascii());
            assert_eq!(key::with_checksum(&s[..KEY_LEN - CHECKSUM_LEN]), s);
            assert_eq!(format!("{k:?}"), "ApiKey(***)");
            let hint = k.hint();
            assert!(hint.starts_with("kgk_...") && hint.ends_with(&s[KEY_LEN - 4..]));
            assert_eq!(ApiKey::parse(k.expose()), Ok(k.clone()));
            // The same characters are not an admin token (other prefix).
            assert!(key::check(ADMIN_TOKEN_PREFIX, s).is_err());
        }
        Err(_) => assert!(key::check(API_KEY_PREFIX, s).is_err()),
    }
    if key::check(ADMIN_TOKEN_PREFIX, s).is_ok() {
        assert!(s.starts_with(ADMIN_TOKEN_PREFIX) && s.len() == KEY_LEN);
    }

    // A well-formed key from the input's bytes: accepted; each single-character change refused
    // (CRC-32 catches every single-symbol error).
    if data.len() >= RANDOM_LEN {
        let body: String = data[..RANDOM_LEN].iter().map(|b| BASE62[*b as usize % 62] as char).collect();
        let good = key::with_checksum(&format!("{API_KEY_PREFIX}{body}"));
        let parsed = ApiKey::parse(&good).expect("a key with its checksum parses");
        assert_eq!(parsed.expose(), good);
        if let Some(&[pos, with]) = data.get(RANDOM_LEN..RANDOM_LEN + 2) {
            let pos = API_KEY_PREFIX.len() + pos as usize % (KEY_LEN - API_KEY_PREFIX.len());
            let mut typo = good.clone().into_bytes();
            let replacement = BASE62[with as usize % 62];
            if typo[pos] != replacement {
                typo[pos] = replacement;
                let typo = String::from_utf8(typo).expect("ascii");
                assert!(ApiKey::parse(&typo).is_err(), "single typo accepted: {typo}");
            }
        }
    }
});
