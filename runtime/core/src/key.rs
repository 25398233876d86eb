//! Task keys: `{function}-{32 lowercase hex}`.
//!
//! A pure task's key hashes what determines its result (module, function and
//! the canonical encoding of its arguments, a future argument contributing its
//! key), so submitting the same task twice names the same future and computes
//! once.

use crate::protocol::Arg;

/// The key of a pure task: the same inputs always give the same key.
pub fn pure_key(module: &str, function: &str, args: &[Arg]) -> String {
    let mut key = PureKey::new(module, function);
    for arg in args {
        key.arg(arg);
    }
    key.finish()
}

/// [`pure_key`] taken an argument at a time, a value's bytes as they
/// come: the key of a call whose argument is too big to hold (a file, a
/// spooled stdin) is the key of the same call with the value in hand.
pub struct PureKey {
    h: blake3::Hasher,
    function: String,
}

impl PureKey {
    /// Begins the key of a call of `function` of `module`.
    pub fn new(module: &str, function: &str) -> Self {
        Self {
            h: task_hasher(module, function),
            function: function.to_string(),
        }
    }

    /// Takes the next argument whole.
    pub fn arg(&mut self, arg: &Arg) {
        let (tag, bytes) = match arg {
            Arg::Value(v) => (b'v', v.as_ref()),
            Arg::Future(k) => (b'f', k.as_bytes()),
        };
        self.h.update(&[tag]);
        self.h.update(&(bytes.len() as u64).to_le_bytes());
        self.h.update(bytes);
    }

    /// Begins the next argument: a value of `len` encoded bytes, given
    /// by [`PureKey::update`] next, in order.
    pub fn value(&mut self, len: u64) {
        self.h.update(b"v");
        self.h.update(&len.to_le_bytes());
    }

    /// Takes the next bytes of the value begun.
    pub fn update(&mut self, bytes: &[u8]) {
        self.h.update(bytes);
    }

    /// The key, once every argument was taken.
    pub fn finish(&self) -> String {
        with_suffix(&self.function, &self.h.finalize().as_bytes()[..16])
    }
}

/// The key of scattered data, [`pure_key`]`("", "data", [value])`, computed
/// from the value's encoded bytes as they arrive, range by range, so a
/// worker taking a big value can check it matches its key without a second
/// pass over it.
pub struct DataKey {
    h: blake3::Hasher,
}

impl DataKey {
    /// Begins the key of an encoded value of `total` bytes.
    pub fn new(total: u64) -> Self {
        let mut h = task_hasher("", "data");
        h.update(b"v");
        h.update(&total.to_le_bytes());
        Self { h }
    }

    /// Takes the next bytes of the value.
    pub fn update(&mut self, bytes: &[u8]) {
        self.h.update(bytes);
    }

    /// The key, once every byte was taken.
    pub fn finish(&self) -> String {
        with_suffix("data", &self.h.finalize().as_bytes()[..16])
    }
}

/// A hasher that has taken a task's module and function.
fn task_hasher(module: &str, function: &str) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"dtask-task-v1\0");
    for part in [module.as_bytes(), function.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h
}

/// A fresh random key, for impure tasks (`--pure=false`) and scattered data.
pub fn random_key(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    with_suffix(prefix, &bytes)
}

fn with_suffix(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}-{}", hex::encode(bytes))
}

/// Checks a user-chosen key: non-empty, at most 512 bytes, printable, no
/// whitespace, and not starting with `@` (which means a future on the CLI).
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key cannot be empty".into());
    }
    if key.len() > 512 {
        return Err(format!(
            "a key can be at most 512 bytes, this one has {}",
            key.len()
        ));
    }
    if key.starts_with('@') {
        return Err(format!("a key cannot start with '@' ({key})"));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("a key cannot contain {c:?} ({key:?})"));
    }
    Ok(())
}

/// Whether `key` has the form dtask gives its own keys: `NAME-` and 32
/// lowercase hex digits (a pure task's, an impure one's, scattered
/// data's).
pub fn has_own_form(key: &str) -> bool {
    key.rsplit_once('-').is_some_and(|(name, hex)| {
        !name.is_empty()
            && hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks a key a user names for a new future (`--key`): as
/// [`validate_key`], and not of the form dtask gives its own keys
/// (`NAME-` and 32 lowercase hex digits: a pure task's, an impure one's,
/// scattered data's), which would take the name of a call or value made
/// later.
pub fn validate_chosen_key(key: &str) -> Result<(), String> {
    validate_key(key)?;
    if has_own_form(key) {
        return Err(format!(
            "{key} has the form of dtask's own keys (NAME- and 32 hex digits, as a pure \
             task's or scattered data's): choose a key of another form"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_data_key_taken_in_ranges_is_the_pure_key_of_the_whole_value() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = pure_key("", "data", &[Arg::Value(Bytes::from(value.clone()))]);
        let mut k = DataKey::new(value.len() as u64);
        for range in value.chunks(999) {
            k.update(range);
        }
        assert_eq!(k.finish(), whole);
        let mut other = DataKey::new(value.len() as u64);
        other.update(&value[1..]);
        other.update(&[0]);
        assert_ne!(other.finish(), whole, "other bytes, another key");
    }

    #[test]
    fn pure_keys_are_deterministic_and_shaped() {
        let args = [Arg::Value(Bytes::from_static(&[10]))];
        let a = pure_key("m", "inc", &args);
        assert_eq!(a, pure_key("m", "inc", &args));
        let (name, hex) = a.rsplit_once('-').unwrap();
        assert_eq!(name, "inc");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn pure_keys_differ_by_every_input() {
        let v = |b: &'static [u8]| Arg::Value(Bytes::from_static(b));
        let base = pure_key("m", "f", &[v(&[1])]);
        assert_ne!(base, pure_key("n", "f", &[v(&[1])]));
        assert_ne!(base, pure_key("m", "g", &[v(&[1])]));
        assert_ne!(base, pure_key("m", "f", &[v(&[2])]));
        assert_ne!(base, pure_key("m", "f", &[v(&[1]), v(&[])]));
        // A future and a value with the same bytes are different arguments.
        assert_ne!(
            pure_key("m", "f", &[Arg::Future("k".into())]),
            pure_key("m", "f", &[v(b"k")])
        );
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key("inc"), random_key("inc"));
    }

    #[test]
    fn bad_user_keys_are_refused() {
        assert!(validate_key("my-key").is_ok());
        assert!(validate_chosen_key("my-key").is_ok());
        assert!(validate_chosen_key("inc-0123456789abcdef0123456789abcdef0").is_ok());
        assert!(validate_chosen_key("inc-0123456789ABCDEF0123456789abcdef").is_ok());
        for own in [
            "inc-0123456789abcdef0123456789abcdef",
            "data-ffffffffffffffffffffffffffffffff",
        ] {
            assert!(validate_chosen_key(own).is_err(), "{own}");
        }
        for bad in ["", "@x", "a b", "a\nb"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
