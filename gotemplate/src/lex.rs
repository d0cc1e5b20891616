//! Splitting a template into text and action tokens, as Go's `text/template/parse` lexer does.

use super::Res;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Text(String),
    Open,
    Close,
    Space,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    Dot,
    /// `.A` (one segment; chains are consecutive Field tokens).
    Field(String),
    /// `$` or `$x`.
    Var(String),
    Ident(String),
    Str(String),
    Char(i64),
    Number(String),
    Bool(bool),
    Nil,
    Comment,
}

pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(super) fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(super) fn lex(src: &str) -> Res<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next_text {
            text.trim_start_matches(is_space)
        } else {
            text
        };
        let Some(after) = after else {
            if !text.is_empty() {
                toks.push(Tok::Text(text.to_owned()));
            }
            return Ok(toks);
        };
        // "{{- " trims the text before it.
        // "{{- " trims the text before it; the marker is the dash and one space.
        let mut inner = after;
        if after.starts_with('-') && after[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space);
            inner = &after[2..];
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text.to_owned()));
        }
        toks.push(Tok::Open);
        let (consumed, trim) = lex_action(inner, &mut toks)?;
        trim_next_text = trim;
        rest = &inner[consumed..];
    }
}

/// Whether `s` starts with the right delimiter, optionally preceded by the trim marker " -". Returns the length
/// of the delimiter including the marker, and whether it trims.
pub(super) fn right_delim(s: &str) -> Option<(usize, bool)> {
    if s.starts_with("}}") {
        return Some((2, false));
    }
    let mut chars = s.char_indices();
    if let Some((_, c)) = chars.next()
        && is_space(c)
        && s[1..].starts_with("-}}")
    {
        return Some((4, true));
    }
    None
}

/// Lexes one action up to and including its right delimiter. Returns the bytes consumed and whether the
/// delimiter trims the following text.
pub(super) fn lex_action(s: &str, toks: &mut Vec<Tok>) -> Res<(usize, bool)> {
    let mut i = 0;
    // A comment fills the whole action and must open right after the delimiter (and trim marker).
    if let Some(body) = s.strip_prefix("/*") {
        let end = body.find("*/").ok_or("unclosed comment")?;
        let after = 2 + end + 2;
        let (len, trim) = right_delim(&s[after..]).ok_or("comment ends before closing delimiter")?;
        toks.push(Tok::Comment);
        toks.push(Tok::Close);
        return Ok((after + len, trim));
    }
    let bytes = s.as_bytes();
    loop {
        if let Some((len, trim)) = right_delim(&s[i..]) {
            // " -}}": the space belongs to the delimiter.
            toks.push(Tok::Close);
            return Ok((i + len, trim));
        }
        let Some(c) = s[i..].chars().next() else {
            return Err("unclosed action".into());
        };
        match c {
            c if is_space(c) => {
                let n = s[i..].len() - s[i..].trim_start_matches(is_space).len();
                // Leave the last space of a run before "-}}": it belongs to the trim marker.
                if s[i + n..].starts_with("-}}") {
                    if n > 1 {
                        toks.push(Tok::Space);
                    }
                    i += n - 1;
                } else {
                    toks.push(Tok::Space);
                    i += n;
                }
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' => {
                if bytes.get(i + 1) != Some(&b'=') {
                    return Err("expected :=".into());
                }
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let (value, len) = lex_quoted(&s[i..])?;
                toks.push(Tok::Str(value));
                i += len;
            }
            '`' => {
                let end = s[i + 1..].find('`').ok_or("unterminated raw quoted string")?;
                toks.push(Tok::Str(s[i + 1..i + 1 + end].replace('\r', "")));
                i += end + 2;
            }
            '\'' => {
                let (value, len) = lex_char(&s[i..])?;
                toks.push(Tok::Char(value));
                i += len;
            }
            '.' if !s[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let n = s[i + 1..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i - 1);
                if n == 0 {
                    toks.push(Tok::Dot);
                } else {
                    toks.push(Tok::Field(s[i + 1..i + 1 + n].to_owned()));
                }
                i += 1 + n;
            }
            '$' => {
                let n = s[i + 1..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i - 1);
                toks.push(Tok::Var(format!("${}", &s[i + 1..i + 1 + n])));
                i += 1 + n;
            }
            c if c == '+' || c == '-' || c == '.' || c.is_ascii_digit() => {
                let n = s[i..]
                    .char_indices()
                    .skip(1)
                    .find(|&(j, c)| {
                        let prev = s.as_bytes()[i + j - 1];
                        !(is_alnum(c)
                            || c == '.'
                            || ((c == '+' || c == '-') && matches!(prev, b'e' | b'E' | b'p' | b'P')))
                    })
                    .map_or(s.len() - i, |(j, _)| j);
                toks.push(Tok::Number(s[i..i + n].to_owned()));
                i += n;
            }
            c if is_alnum(c) => {
                let n = s[i..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i);
                let word = &s[i..i + n];
                toks.push(match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    w => Tok::Ident(w.to_owned()),
                });
                i += n;
            }
            c => return Err(format!("unrecognized character in action: {c:?}")),
        }
    }
}

/// An interpreted string literal: Go's escapes. Returns the value and the literal's length.
pub(super) fn lex_quoted(s: &str) -> Res<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let (ch, len) = unescape(&s[i..], '"')?;
                out.push(ch);
                for _ in 1..len {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// A character constant such as `'a'` or `'\n'`: its code point and the literal's length.
pub(super) fn lex_char(s: &str) -> Res<(i64, usize)> {
    let body = &s[1..];
    let (c, len) = if body.starts_with('\\') {
        unescape(body, '\'')?
    } else {
        let c = body.chars().next().ok_or("unterminated character constant")?;
        if c == '\'' || c == '\n' {
            return Err("empty character constant".into());
        }
        (c, c.len_utf8())
    };
    if !body[len..].starts_with('\'') {
        return Err("unterminated character constant".into());
    }
    Ok((i64::from(u32::from(c)), len + 2))
}

/// One escape sequence at the start of `s` (which starts with a backslash), as in Go's `strconv.UnquoteChar`.
/// Returns the character and the sequence's length in chars (all ASCII, so also in bytes).
pub(super) fn unescape(s: &str, quote: char) -> Res<(char, usize)> {
    let b = s.as_bytes();
    let c = *b.get(1).ok_or("bad escape")? as char;
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        '\\' => Some('\\'),
        c if c == quote => Some(c),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 2));
    }
    let hex = |n: usize| -> Res<u32> {
        let digits = s.get(2..2 + n).ok_or("bad escape")?;
        if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
            return Err("bad escape".into());
        }
        u32::from_str_radix(digits, 16).map_err(|_| "bad escape".to_owned())
    };
    let (code, len) = match c {
        'x' => (hex(2)?, 4),
        'u' => (hex(4)?, 6),
        'U' => (hex(8)?, 10),
        '0'..='7' => {
            let digits = s.get(1..4).ok_or("bad escape")?;
            if !digits.bytes().all(|d| (b'0'..=b'7').contains(&d)) {
                return Err("bad escape".into());
            }
            let v = u32::from_str_radix(digits, 8).map_err(|_| "bad escape".to_owned())?;
            if v > 255 {
                return Err("bad escape".into());
            }
            (v, 4)
        }
        _ => return Err("unknown escape sequence".into()),
    };
    // \x and octal escapes are bytes; above 0x7f they would make invalid UTF-8, which a Rust string cannot hold.
    if matches!(c, 'x' | '0'..='7') && code > 0x7f {
        return Err("a byte escape above \\x7f is not supported".into());
    }
    Ok((
        char::from_u32(code).ok_or("escape is not a valid character")?,
        len,
    ))
}
