//! Actors: stateful resource instances living on one worker.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bindings::dtask::task::actor as wit;
use crate::client::wit_items;
use crate::{IntoArgs, Result, decode};

/// A handle to an actor: one instance of a resource that a guest component
/// exports, constructed by dtask on one worker, whose methods run there one
/// call at a time.
///
/// The handle is only the actor's key: cloning or dropping it does nothing
/// to the actor. It serializes as that key (a plain string), so it can be
/// passed to a task, whose parameter of WIT type `string` receives the key,
/// or stored in a [`Queue`](crate::Queue) or a
/// [`Variable`](crate::Variable), and read back as an `Actor` or a
/// `String`.
///
/// ```no_run
/// # fn main() -> dtask_sdk::Result<()> {
/// use dtask_sdk::{client, Actor};
///
/// // `counter` is a resource this task's own module exports.
/// let counter = Actor::create("counter", (0i64,))?;
/// let n: i64 = counter.call("increment", (5i64,))?;
/// let total = client().submit("count-up", (&counter, 3u32))?;
/// counter.delete()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Actor {
    key: String,
}

impl Actor {
    /// Constructs the resource `resource` exported by this task's own module
    /// on a worker, passing `args` to its constructor; returns the handle.
    pub fn create(resource: &str, args: impl IntoArgs) -> Result<Actor> {
        Actor::create_on(None, resource, args)
    }

    /// Like [`create`](Actor::create), for a resource exported by another
    /// module, given by its hex BLAKE3 hash.
    pub fn create_in(module_hash: &str, resource: &str, args: impl IntoArgs) -> Result<Actor> {
        Actor::create_on(Some(module_hash), resource, args)
    }

    fn create_on(module: Option<&str>, resource: &str, args: impl IntoArgs) -> Result<Actor> {
        let key = wit::create(module, resource, &wit_items(args)?)?;
        Ok(Actor::from_key(key))
    }

    /// The actor named by `key`, such as one a task received as an argument
    /// or one printed by the shell.
    pub fn from_key(key: impl Into<String>) -> Actor {
        Actor { key: key.into() }
    }

    /// Its key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its key, consuming the handle.
    pub fn into_key(self) -> String {
        self.key
    }

    /// Calls the actor's method `method` with `args` (a tuple, as for
    /// [`Client::submit`](crate::Client::submit)) and decodes its result as
    /// `T`: `()` for a method returning nothing, `Option<T>` for an
    /// `option<T>`.
    ///
    /// [`Error::ActorLost`](crate::Error::ActorLost) if the actor is gone.
    pub fn call<T: DeserializeOwned>(&self, method: &str, args: impl IntoArgs) -> Result<T> {
        decode(&self.call_raw(method, args)?)
    }

    /// Like [`call`](Actor::call), returning the result still encoded as
    /// MessagePack.
    pub fn call_raw(&self, method: &str, args: impl IntoArgs) -> Result<Vec<u8>> {
        Ok(wit::call(&self.key, method, &wit_items(args)?)?)
    }

    /// Deletes the actor: its state is dropped, and later calls through
    /// any handle fail with [`Error::ActorLost`](crate::Error::ActorLost).
    pub fn delete(self) -> Result<()> {
        Ok(wit::delete(&self.key)?)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Actor, D::Error> {
        String::deserialize(deserializer).map(Actor::from_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, encode};

    #[test]
    fn actors_are_keys() {
        let actor = Actor::from_key(String::from("counter-7f"));
        assert_eq!(actor.key(), "counter-7f");
        assert_eq!(actor.to_string(), "counter-7f");
        assert_eq!(actor.into_key(), "counter-7f");
    }

    #[test]
    fn an_actor_round_trips_as_a_messagepack_string() {
        let actor = Actor::from_key("counter-7f");
        let bytes = encode(&actor).unwrap();
        assert_eq!(bytes, encode("counter-7f").unwrap());
        assert_eq!(bytes[0], 0xa0 | 10, "a fixstr of 10 bytes");
        assert_eq!(decode::<Actor>(&bytes).unwrap(), actor);
        assert_eq!(decode::<String>(&bytes).unwrap(), "counter-7f");
        assert_eq!(
            decode::<Actor>(&encode("made-by-the-shell").unwrap()).unwrap(),
            Actor::from_key("made-by-the-shell")
        );
        assert!(decode::<Actor>(&encode(&7i64).unwrap()).is_err());
    }

    #[test]
    fn method_results_decode_as_the_host_sends_them() {
        // No result: nil. `option<list<u8>>`: nil, a binary, or an empty array.
        decode::<()>(&[0xc0]).unwrap();
        assert_eq!(decode::<Option<Vec<u8>>>(&[0xc0]).unwrap(), None);
        assert_eq!(
            decode::<Option<Vec<u8>>>(&[0xc4, 2, 4, 5]).unwrap(),
            Some(vec![4, 5])
        );
        assert_eq!(decode::<Option<Vec<u8>>>(&[0x90]).unwrap(), Some(vec![]));
    }

    #[test]
    fn an_actor_is_a_plain_value_argument() {
        let actor = Actor::from_key("a-1");
        let items = (&actor, 3u32).into_items().unwrap();
        assert_eq!(
            items,
            vec![
                Item::Value(vec![0xa3, b'a', b'-', b'1']),
                Item::Value(vec![3])
            ]
        );
        let stored = Item::value(&actor).unwrap();
        assert_eq!(stored.decode::<Actor>().unwrap(), actor);
        let in_struct: (Actor, Vec<Actor>) = decode(&encode(&(&actor, [&actor])).unwrap()).unwrap();
        assert_eq!(in_struct, (actor.clone(), vec![actor]));
    }
}
