//! Checking a call's arguments against the function's WIT signature
//! before anything is submitted.

use super::*;

/// Checks a call against the export's signature: the export exists, the
/// number of arguments matches, and every literal argument fits its type.
pub fn check_call(module: &LocalModule, function: &str, args: &[Arg]) -> Result<(), String> {
    check_args(&module.types, &module.name, function, args)
}

/// [`check_call`] against a compiled module called `name` in messages.
pub fn check_args(
    module: &ModuleTypes,
    name: &str,
    function: &str,
    args: &[Arg],
) -> Result<(), String> {
    let sig = module.func(function, name)?;
    if args.len() != sig.params.len() {
        return Err(arity_message(&sig.to_wit(), sig.params.len(), args.len()));
    }
    for (arg, (name, ty)) in args.iter().zip(&sig.params) {
        if let Arg::Value(bytes) = arg {
            let v =
                value::decode(bytes).map_err(|e| format!("{function}: parameter {name}: {e}"))?;
            value::value_to_val(&v, ty)
                .map_err(|e| format!("{function}: parameter {name}: {e}"))?;
        }
    }
    Ok(())
}

/// The message for a call with the wrong number of arguments.
pub fn arity_message(signature: &str, expected: usize, given: usize) -> String {
    format!(
        "{signature} takes {expected} argument{}, {given} {} given",
        if expected == 1 { "" } else { "s" },
        if given == 1 { "was" } else { "were" }
    )
}
