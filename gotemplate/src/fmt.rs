//! Printing values as Go's `fmt` does (`%v`, `Sprint`, `Sprintf`), and Go's escapers and quoting.

use std::fmt::Write as _;

use super::{Res, Value};

/// `fmt.Sprint` of one value (`%v`).
pub(super) fn print_value(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u, _) => u.to_string(),
        Value::Float(f) => format_float_shortest(*f),
        Value::Str(s) => s.clone(),
        Value::Struct(fs, _) => format!(
            "{{{}}}",
            fs.iter()
                .map(|(_, v)| print_value(v))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&print_value(v));
    }
    out
}

/// Go's `%v` for a float64 (`strconv` 'g' with the shortest precision): shortest digits, exponent form when the
/// decimal exponent is below -4 or at least 6.
pub(super) fn format_float_shortest(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> Res<String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        quote_char_into(&mut out, c, '"')?;
    }
    out.push('"');
    Ok(out)
}

pub(super) fn quote_char_into(out: &mut String, c: char, quote: char) -> Res<()> {
    match c {
        c if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if !is_print(c)? => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
    Ok(())
}

/// Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols and the ASCII space), where Rust's
/// standard library can tell: exactly for ASCII, letters and digits, controls, spaces, private use and
/// noncharacters, and for the fully assigned punctuation and symbol blocks below. Anything else (an unassigned
/// code point, say, from `printf "%q"` of a number) is an error rather than a guess.
pub(super) fn is_print(c: char) -> Res<bool> {
    let u = c as u32;
    if c.is_ascii() {
        return Ok(c == ' ' || c.is_ascii_graphic());
    }
    if c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
        || (0xE000..=0xF8FF).contains(&u)
        || u >= 0xF_0000
        || (0xFDD0..=0xFDEF).contains(&u)
        || u & 0xFFFE == 0xFFFE
    {
        return Ok(false);
    }
    if c.is_alphanumeric()
        || matches!(u, 0xA1..=0xBF | 0xD7 | 0xF7 | 0x2010..=0x2027 | 0x2030..=0x205E | 0x20A0..=0x20C0 | 0x2100..=0x214F | 0x2190..=0x23FF | 0x2460..=0x24FF | 0x2500..=0x27BF)
    {
        return Ok(true);
    }
    Err(format!(
        "quoting U+{u:04X} is not supported: konnector cannot tell whether Go prints or escapes it"
    ))
}

/// The text Go's escapers (`html`, `js`, `urlquery`) work on: a lone string as is, else `fmt.Sprint` of the
/// arguments with a missing value turned into the string `<no value>` first (as an action prints it).
pub(super) fn escaper_text(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.clone(),
        _ => {
            let printable: Vec<Value> = args
                .iter()
                .map(|a| match a {
                    Value::Nil => Value::Str("<no value>".to_owned()),
                    a => a.clone(),
                })
                .collect();
            sprint(&printable)
        }
    }
}

pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn js_escape(s: &str) -> Res<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u00{:02X}", c as u32);
            }
            c if !c.is_ascii() && !is_print(c)? => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Go's `url.QueryEscape`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// One `%` directive's flags.
#[derive(Default)]
pub(super) struct Spec {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Spec {
    fn pad(&self, body: String) -> String {
        let len = body.chars().count();
        let Some(width) = self.width.filter(|w| *w > len) else {
            return body;
        };
        let fill = width - len;
        if self.minus {
            format!("{body}{}", " ".repeat(fill))
        } else if self.zero {
            format!("{}{body}", "0".repeat(fill))
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }

    /// Go's fmtInteger: sign, optional prefix, digits with precision or zero padding, then width.
    fn integer(&self, negative: bool, magnitude: u128, verb: char) -> String {
        let mut digits = match verb {
            'x' => format!("{magnitude:x}"),
            'X' => format!("{magnitude:X}"),
            'o' | 'O' => format!("{magnitude:o}"),
            'b' => format!("{magnitude:b}"),
            _ => magnitude.to_string(),
        };
        let sign = if negative {
            "-"
        } else if self.plus {
            "+"
        } else if self.space {
            " "
        } else {
            ""
        };
        if self.precision == Some(0) && magnitude == 0 {
            digits.clear();
        }
        let min_digits = match self.precision {
            Some(p) => p,
            None if self.zero && !self.minus => self
                .width
                .unwrap_or(0)
                .saturating_sub(usize::from(!sign.is_empty())),
            None => 0,
        };
        let prefix = match verb {
            'x' if self.sharp => "0x",
            'X' if self.sharp => "0X",
            'b' if self.sharp => "0b",
            'O' => "0o",
            'o' if self.sharp && !digits.starts_with('0') => "0",
            _ => "",
        };
        if digits.len() < min_digits {
            digits = format!("{}{digits}", "0".repeat(min_digits - digits.len()));
        }
        let body = format!("{sign}{prefix}{digits}");
        // Zero padding was done through the digits; the width pads with spaces.
        Spec {
            zero: false,
            ..self.clone_flags()
        }
        .pad(body)
    }

    fn clone_flags(&self) -> Spec {
        Spec {
            plus: self.plus,
            minus: self.minus,
            sharp: self.sharp,
            space: self.space,
            zero: self.zero,
            width: self.width,
            precision: self.precision,
        }
    }
}

/// `fmt.Sprintf` for the verbs a values template may reasonably use. Wrong verb/argument pairs render as Go
/// renders them (`%!d(string=x)`); verbs or flags not implemented here are an error, never a guess.
pub(super) fn sprintf(format: &str, args: &[Value]) -> Res<String> {
    let mut out = String::new();
    let mut next_arg = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '+' => spec.plus = true,
                '-' => spec.minus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = !spec.minus,
                _ => break,
            }
            chars.next();
        }
        if spec.minus {
            spec.zero = false;
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<usize> {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        if chars.peek() == Some(&'*') || chars.peek() == Some(&'[') {
            return Err("printf: '*' widths and explicit argument indexes are not supported".into());
        }
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            if chars.peek() == Some(&'*') {
                return Err("printf: '*' precision is not supported".into());
            }
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        out.push_str(&format_one(&spec, verb, arg)?);
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|a| match a {
                Value::Nil => "<nil>".to_owned(),
                a => format!("{}={}", a.type_name(), print_value(a)),
            })
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    Ok(out)
}

/// A verb that does not fit its operand: `%!d(string=x)`, the operand printed with `%v` and the directive's
/// flags, width and precision, as Go does.
pub(super) fn bad_verb(spec: &Spec, verb: char, arg: &Value) -> Res<String> {
    Ok(match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        a => format!("%!{verb}({}={})", a.type_name(), format_one(spec, 'v', a)?),
    })
}

pub(super) fn format_one(spec: &Spec, verb: char, arg: &Value) -> Res<String> {
    if verb == 'T' {
        return Ok(spec.pad(arg.type_name().to_owned()));
    }
    let unsupported = || Err(format!("printf: %{verb} is not supported for this value"));
    Ok(match arg {
        Value::Nil => match verb {
            'v' => spec.pad("<nil>".to_owned()),
            _ => bad_verb(spec, verb, arg)?,
        },
        Value::Bool(b) => match verb {
            'v' | 't' => spec.pad(b.to_string()),
            'd' | 's' | 'q' | 'x' | 'X' | 'o' | 'O' | 'b' | 'c' | 'U' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
                bad_verb(spec, verb, arg)?
            }
            _ => return unsupported(),
        },
        Value::Int(_) | Value::Uint(..) => {
            let (negative, magnitude) = match arg {
                Value::Int(i) => (*i < 0, u128::from(i.unsigned_abs())),
                Value::Uint(u, _) => (false, u128::from(*u)),
                _ => unreachable!("matched above"),
            };
            match verb {
                'v' | 'd' if !spec.sharp => spec.integer(negative, magnitude, 'd'),
                'x' | 'X' | 'o' | 'O' | 'b' => spec.integer(negative, magnitude, verb),
                'c' | 'q' | 'U' if negative => return unsupported(),
                'c' => spec.pad(
                    char::from_u32(u32::try_from(magnitude).unwrap_or(0xFFFD))
                        .unwrap_or('\u{FFFD}')
                        .to_string(),
                ),
                'q' if !spec.sharp && !spec.plus => {
                    let c = char::from_u32(u32::try_from(magnitude).unwrap_or(0xFFFD)).unwrap_or('\u{FFFD}');
                    let mut q = String::from('\'');
                    quote_char_into(&mut q, c, '\'')?;
                    q.push('\'');
                    spec.pad(q)
                }
                'U' if !spec.sharp => spec.pad(format!("U+{magnitude:04X}")),
                's' | 't' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' => bad_verb(spec, verb, arg)?,
                _ => return unsupported(),
            }
        }
        Value::Float(f) => match verb {
            'v' | 'g' if spec.precision.is_none() && !spec.sharp => {
                sign_float(spec, format_float_shortest(*f))
            }
            'f' | 'F' => sign_float(spec, format!("{:.*}", spec.precision.unwrap_or(6), f)),
            'e' | 'E' => {
                let s = format!("{:.*e}", spec.precision.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                let s = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                let s = if verb == 'E' { s.to_uppercase() } else { s };
                sign_float(spec, s)
            }
            'd' | 's' | 't' | 'c' | 'q' | 'U' | 'o' | 'O' => bad_verb(spec, verb, arg)?,
            _ => return unsupported(),
        },
        Value::Str(s) => {
            let truncated: String = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            match verb {
                'v' | 's' if !spec.sharp => spec.pad(truncated),
                'q' if !spec.sharp && !spec.plus => spec.pad(go_quote(&truncated)?),
                // Hex of the bytes; with '#', one 0x before them all (unless empty). The space flag (a prefix per
                // byte) is not implemented.
                'x' | 'X' if !spec.space => {
                    let bytes = match spec.precision {
                        Some(p) => &s.as_bytes()[..p.min(s.len())],
                        None => s.as_bytes(),
                    };
                    let prefix = match verb {
                        _ if !spec.sharp || bytes.is_empty() => "",
                        'x' => "0x",
                        _ => "0X",
                    };
                    let hex: String = std::iter::once(prefix.to_owned())
                        .chain(bytes.iter().map(|b| {
                            if verb == 'x' {
                                format!("{b:02x}")
                            } else {
                                format!("{b:02X}")
                            }
                        }))
                        .collect();
                    spec.pad(hex)
                }
                'd' | 't' | 'c' | 'U' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 'o' | 'O' | 'b' => {
                    bad_verb(spec, verb, arg)?
                }
                _ => return unsupported(),
            }
        }
        // Go formats a struct field by field with the same verb and flags (so a width pads each field), in
        // braces; %+v names the fields (and its plus means only that), %#v (Go syntax) is not implemented.
        Value::Struct(fields, _) => {
            if verb == 'v' && spec.sharp {
                return unsupported();
            }
            let names = verb == 'v' && spec.plus;
            let field_spec = Spec {
                plus: spec.plus && !names,
                ..spec.clone_flags()
            };
            let parts = fields
                .iter()
                .map(|(name, field)| {
                    let value = format_one(&field_spec, verb, field)?;
                    Ok(if names { format!("{name}:{value}") } else { value })
                })
                .collect::<Res<Vec<_>>>()?;
            format!("{{{}}}", parts.join(" "))
        }
    })
}

/// Adds the sign flags to a formatted float and pads it as Go's fmtFloat does: zeros go after the sign.
pub(super) fn sign_float(spec: &Spec, s: String) -> String {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d.to_owned()),
        None if spec.plus => ("+", s),
        None if spec.space => (" ", s),
        None => ("", s),
    };
    let len = sign.len() + digits.chars().count();
    match spec.width {
        Some(w)
            if w > len
                && spec.zero
                && !spec.minus
                && digits.bytes().all(|b| {
                    b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'+' || b == b'-'
                }) =>
        {
            format!("{sign}{}{digits}", "0".repeat(w - len))
        }
        _ => Spec {
            zero: false,
            ..spec.clone_flags()
        }
        .pad(format!("{sign}{digits}")),
    }
}
