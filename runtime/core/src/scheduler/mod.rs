//! The scheduler's pure decision core ([`state`]); the server that moves
//! frames to and from it lives in `dtask-runtime`.

pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod actor_tests;
#[cfg(test)]
mod nemesis_tests;
#[cfg(test)]
mod primitive_tests;
#[cfg(test)]
mod stealing_tests;
#[cfg(test)]
mod tests;
