//! Reading task arguments and items from shell words and stdin, typed by
//! the function's WIT signature where there is one; sizes and durations.

use super::*;

/// Where a word asks for stdin (`-`, or `<-` for a WASI command).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// It reads this process's stdin.
    Readable,
    /// Stdin holds the words themselves (`dtask map`'s lines): `-` is
    /// taken as a word like any other, and `<-` is refused.
    Lines,
}

/// Parses shell words into arguments of `function`, by parameter type:
/// `@KEY` is a future, `@@…` a literal `@…`, `-` reads stdin. For a WASI
/// command see [`command_args`].
pub fn parse_args(
    module: &LocalModule,
    function: &str,
    words: &[String],
) -> Result<Vec<Arg>, Failure> {
    parse_args_with(module, function, words, Stdin::Readable)
}

/// [`parse_args`], with `stdin` saying what `-` means.
pub fn parse_args_with(
    module: &LocalModule,
    function: &str,
    words: &[String],
    stdin: Stdin,
) -> Result<Vec<Arg>, Failure> {
    let sig = module
        .types
        .func(function, &module.name)
        .map_err(Failure::usage)?;
    if module.types.kind().is_command() {
        return command_args(module, words, stdin);
    }
    if words.len() != sig.params.len() {
        return Err(Failure::usage(dtask_runtime::client::arity_message(
            &sig.to_wit(),
            sig.params.len(),
            words.len(),
        )));
    }
    let mut stdin_used = false;
    words
        .iter()
        .zip(&sig.params)
        .map(|(word, (name, ty))| {
            let at = |e: String| Failure::usage(format!("{function}: parameter {name}: {e}"));
            if let Some(rest) = word.strip_prefix('@')
                && !rest.starts_with('@')
            {
                dtask_runtime::key::validate_key(rest).map_err(at)?;
                return Ok(Arg::Future(rest.to_string()));
            }
            let v = if word == "-" && stdin == Stdin::Readable {
                if std::mem::replace(&mut stdin_used, true) {
                    return Err(at("stdin (`-`) can be read by one argument only".into()));
                }
                stdin_value(ty).map_err(at)?
            } else {
                let word = word
                    .strip_prefix('@')
                    .filter(|w| w.starts_with('@'))
                    .unwrap_or(word);
                value::word_to_value(word, ty).map_err(|e| at(e.to_string()))?
            };
            Ok(Arg::Value(value::encode(&v).into()))
        })
        .collect()
}

/// A WASI command's task arguments `[stdin, argv]` from shell words.
///
/// Every word is one argv string, verbatim, after argv[0] (the module file's
/// stem), except that one word may set stdin: `<@KEY` to a future's result,
/// `<-` to this process's stdin. `<<-` and `<<@…` pass `<-` and `<@…`
/// literally. Without either, stdin is empty.
fn command_args(module: &LocalModule, words: &[String], from: Stdin) -> Result<Vec<Arg>, Failure> {
    let program = Path::new(&module.name)
        .file_stem()
        .map_or_else(|| module.name.clone(), |s| s.to_string_lossy().into_owned());
    let mut argv = vec![Value::from(program)];
    let mut stdin: Option<Arg> = None;
    for word in words {
        if word != "<-" && !word.starts_with("<@") {
            let literal = match word.strip_prefix('<') {
                Some(rest) if rest == "<-" || rest.starts_with("<@") => rest,
                _ => word.as_str(),
            };
            argv.push(Value::from(literal));
            continue;
        }
        if stdin.is_some() {
            return Err(Failure::usage(format!(
                "a command has one stdin; `{word}` is the second of `<-` or `<@KEY` \
                 (use `<<-` or `<<@…` for a literal argument)"
            )));
        }
        stdin = Some(match word.strip_prefix("<@") {
            Some(key) => {
                dtask_runtime::key::validate_key(key)
                    .map_err(|e| Failure::usage(format!("stdin ({word}): {e}")))?;
                Arg::Future(key.to_string())
            }
            None if from == Stdin::Lines => {
                return Err(Failure::usage(
                    "`<-` passes this process's stdin, and map reads its lines from there: \
                     pass a future's result with `<@KEY`, or a literal `<-` as `<<-`",
                ));
            }
            None => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
                Arg::Value(value::encode(&Value::Binary(bytes)).into())
            }
        });
    }
    let stdin = stdin.unwrap_or_else(|| Arg::Value(value::encode(&Value::Nil).into()));
    Ok(vec![
        stdin,
        Arg::Value(value::encode(&Value::Array(argv)).into()),
    ])
}

/// A byte string or string argument `-` (a `list<u8>` or `string`
/// parameter): stdin taken out of `words` (left as an empty word), as the
/// encoding of the value, never held whole when big (a regular file is
/// read from where it is, a pipe past one range spooled to a temporary
/// file, as `dtask scatter` reads stdin; a string is checked to be UTF-8
/// and loses one trailing newline, as a small one does). A small one
/// comes as the encoding in hand. `None` if no word asks for it; anything
/// else a word asks of stdin is left to [`parse_args`].
pub fn big_stdin(
    module: &LocalModule,
    function: &str,
    words: &mut [String],
) -> Result<Option<(usize, value::Encoded)>, Failure> {
    let Ok(sig) = module.types.func(function, &module.name) else {
        return Ok(None);
    };
    let mut asked = words.iter().enumerate().filter(|(_, w)| *w == "-");
    let (Some((at, _)), None) = (asked.next(), asked.next()) else {
        return Ok(None);
    };
    let text = match sig.params.get(at) {
        Some((_, Type::List(l))) if matches!(l.ty(), Type::U8) => false,
        Some((_, Type::String)) => true,
        _ => return Ok(None),
    };
    if module.types.kind().is_command() || words.len() != sig.params.len() {
        return Ok(None);
    }
    let chunk = dtask_runtime::peer::CHUNK;
    let read = if text {
        value::Encoded::stdin_text(chunk as usize)
    } else {
        value::Encoded::stdin(chunk as usize)
    };
    let name = &sig.params[at].0;
    let failed = |e: std::io::Error| {
        Failure::usage(match e.kind() {
            std::io::ErrorKind::InvalidData => format!("{function}: parameter {name}: {e}"),
            _ => format!("{function}: parameter {name}: cannot read stdin: {e}"),
        })
    };
    let mut read = read.map_err(failed)?;
    // A small regular file goes inline, as a small pipe does.
    if matches!(read, value::Encoded::File(_)) && read.len() <= chunk {
        read = value::Encoded::Memory(read.range(0, chunk).map_err(failed)?);
    }
    words[at] = String::new();
    Ok(Some((at, read)))
}

fn stdin_value(ty: &Type) -> Result<Value, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    value::stdin_to_value(bytes, ty).map_err(|e| e.to_string())
}

/// Parses a size as [`bytesize`] reads it: bytes, or a number with a
/// binary unit (`KiB`, `MiB`, `GiB`, or `Ki`, `Mi`, `Gi`) or a decimal one
/// (`KB`, `MB`, `GB`, or `K`, `M`, `G`); `1.5GiB` and `512 MiB` are sizes too.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a size (e.g. 64KiB, 512MiB, 1GiB): {e}"))?;
    // bytesize saturates what overflows.
    match size.as_u64() {
        u64::MAX => Err(format!("{s:?} is too large")),
        n => usize::try_from(n).map_err(|_| format!("{s:?} is too large")),
    }
}

pub use dtask_runtime::config::parse_duration;

/// An item for a queue or variable from a shell word, with no WIT type to
/// guide it: `@KEY` is a future (the scheduler refuses keys it does not
/// know), `-` reads stdin (text less one trailing newline, as
/// [`untyped_value`]; bytes that are not UTF-8 as a byte string, exactly),
/// anything else is [`untyped_value`] (`@@…` being a literal `@…`).
pub fn item_from_word(word: &str) -> Result<Arg, Failure> {
    if let Some(rest) = word.strip_prefix('@')
        && !rest.starts_with('@')
    {
        dtask_runtime::key::validate_key(rest)
            .map_err(|e| Failure::usage(format!("VALUE {word}: {e}")))?;
        return Ok(Arg::Future(rest.to_string()));
    }
    let v = if word == "-" {
        let mut raw = Vec::new();
        std::io::stdin()
            .read_to_end(&mut raw)
            .map_err(|e| Failure::usage(format!("cannot read VALUE from stdin: {e}")))?;
        match String::from_utf8(raw) {
            Ok(mut text) => {
                // Less one trailing newline, in place: a big value is not
                // copied for it.
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                untyped_text(text)?
            }
            Err(bytes) => Value::Binary(bytes.into_bytes()),
        }
    } else {
        untyped_value(word.strip_prefix('@').unwrap_or(word))?
    };
    Ok(Arg::Value(value::encode(&v).into()))
}

/// A value from text with no WIT type to guide it: JSON if it parses
/// (`42`, `2.5`, `true`, `null`, `"text"`, `[1, 2]`, `{"a": 1}`), else the
/// text itself as a string (`hello`). Text that starts like a JSON string,
/// array or object (`"`, `[`, `{`) must be valid JSON: a typo there should
/// not quietly become a string.
pub fn untyped_value(text: &str) -> Result<Value, Failure> {
    match json_or_why(text)? {
        Some(v) => Ok(v),
        None => Ok(Value::from(text)),
    }
}

/// [`untyped_value`] of text owned already: a string value takes it
/// without a copy.
fn untyped_text(text: String) -> Result<Value, Failure> {
    match json_or_why(&text)? {
        Some(v) => Ok(v),
        None => Ok(Value::from(text)),
    }
}

/// `text` as JSON if it parses; `None` if it is not JSON and does not
/// look like it; a usage error if it starts like JSON but is not.
fn json_or_why(text: &str) -> Result<Option<Value>, Failure> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(j) => Ok(Some(value::untyped_json_to_value(&j))),
        Err(e) if text.trim_start().starts_with(['"', '[', '{']) => {
            // Its beginning: the text may be megabytes from stdin.
            let mut end = text.len().min(80);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let more = if end < text.len() { "…" } else { "" };
            Err(Failure::usage(format!(
                "VALUE {:?}{more} starts like JSON but is not valid JSON: {e}",
                &text[..end]
            )))
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_binary_and_decimal_units_and_refuse_the_rest() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("20000000000GiB")
                .unwrap_err()
                .contains("too large")
        );
        for bad in ["", "MiB", "12 parsecs", "-1MiB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
    }
}
