//! Executing a parsed template against the data, with Go's builtin functions and CAREN's `joinQuoted`.

use std::collections::HashMap;

use super::fmt::{escaper_text, html_escape, js_escape, print_value, query_escape, sprint, sprintf};
use super::parse::{Arg, Node, Pipe};
use super::{Res, Value};

/// Deepest nesting of `{{template}}` calls, as a guard against recursion.
const MAX_DEPTH: usize = 1000;

/// Control flow out of a list of nodes.
pub(super) enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'a> {
    pub(super) defines: &'a HashMap<String, Vec<Node>>,
    pub(super) vars: Vec<(String, Value)>,
    pub(super) out: String,
    pub(super) depth: usize,
}

impl Exec<'_> {
    pub(super) fn list(&mut self, nodes: &[Node], dot: &Value) -> Res<Flow> {
        for node in nodes {
            match self.node(node, dot)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn scoped(&mut self, nodes: &[Node], dot: &Value) -> Res<Flow> {
        let mark = self.vars.len();
        let flow = self.list(nodes, dot);
        self.vars.truncate(mark);
        flow
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Res<Flow> {
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(pipe) => {
                let v = self.pipe(pipe, dot)?;
                if pipe.decl.is_empty() {
                    // An invalid (nil) value prints as "<no value>" in an action, unlike fmt's "<nil>".
                    match v {
                        Value::Nil => self.out.push_str("<no value>"),
                        v => self.out.push_str(&print_value(&v)),
                    }
                }
            }
            Node::If(pipe, body, else_body) | Node::With(pipe, body, else_body) => {
                let mark = self.vars.len();
                let v = self.pipe(pipe, dot)?;
                let with = matches!(node, Node::With(..));
                let flow = if v.truth() {
                    self.scoped(body, if with { &v } else { dot })
                } else {
                    self.scoped(else_body, dot)
                };
                self.vars.truncate(mark);
                return flow;
            }
            Node::Range(pipe, body, else_body) => {
                let mark = self.vars.len();
                let iterable = Pipe {
                    decl: Vec::new(),
                    assign: false,
                    cmds: pipe.cmds.clone(),
                };
                let v = self.pipe(&iterable, dot)?;
                // The data holds no slices or maps, and Go 1.19 ranges over nothing else: only nil (no
                // iterations) can come here without an error.
                let items: Vec<Value> = match v {
                    Value::Nil => Vec::new(),
                    other => return Err(format!("range can't iterate over {}", print_value(&other))),
                };
                if items.is_empty() {
                    let flow = self.scoped(else_body, dot);
                    self.vars.truncate(mark);
                    return flow;
                }
                for (i, item) in items.iter().enumerate() {
                    let inner = self.vars.len();
                    match pipe.decl.as_slice() {
                        [] => {}
                        [e] => self.set(e, item.clone(), pipe.assign),
                        [k, e, ..] => {
                            self.set(k, Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), pipe.assign);
                            self.set(e, item.clone(), pipe.assign);
                        }
                    }
                    let flow = self.scoped(body, item)?;
                    if !pipe.assign {
                        self.vars.truncate(inner);
                    }
                    if matches!(flow, Flow::Break) {
                        break;
                    }
                }
                self.vars.truncate(mark);
            }
            Node::Template(name, pipe) => {
                let body = self
                    .defines
                    .get(name)
                    .ok_or_else(|| format!("no such template {name:?}"))?;
                let new_dot = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Nil,
                };
                if self.depth >= MAX_DEPTH {
                    return Err("exceeded maximum template depth".into());
                }
                let saved = std::mem::replace(&mut self.vars, vec![("$".to_owned(), new_dot.clone())]);
                self.depth += 1;
                let result = self.list(body, &new_dot);
                self.depth -= 1;
                self.vars = saved;
                result?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn set(&mut self, name: &str, value: Value, assign: bool) {
        if assign {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = value;
            }
        } else {
            self.vars.push((name.to_owned(), value));
        }
    }

    fn var(&self, name: &str) -> Res<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Res<Value> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(cmd, dot, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for name in &pipe.decl {
            self.set(name, value.clone(), pipe.assign);
        }
        Ok(value)
    }

    fn command(&mut self, cmd: &[Arg], dot: &Value, piped: Option<Value>) -> Res<Value> {
        let (first, args) = cmd.split_first().ok_or("empty command")?;
        if let Arg::Func(name) = first {
            return self.call(name, args, dot, piped);
        }
        if !args.is_empty() || piped.is_some() {
            return Err("can't give argument to non-function".into());
        }
        self.operand(first, dot)
    }

    fn operand(&mut self, arg: &Arg, dot: &Value) -> Res<Value> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => fields(dot.clone(), chain),
            Arg::Var(name, chain) => fields(self.var(name)?, chain),
            Arg::Func(name) => self.call(name, &[], dot, None),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Err("nil is not a command".into()),
            Arg::Sub(pipe, chain) => {
                let v = self.pipe(pipe, dot)?;
                fields(v, chain)
            }
        }
    }

    /// Evaluates a function's argument. `nil` is accepted only where Go's parameter type can be nil (`any`,
    /// `[]string`), i.e. for `nil_ok` functions.
    fn arg(&mut self, arg: &Arg, dot: &Value, nil_ok: bool) -> Res<Value> {
        match arg {
            Arg::Nil if nil_ok => Ok(Value::Nil),
            Arg::Nil => Err("cannot assign nil to reflect.Value".into()),
            other => self.operand(other, dot),
        }
    }

    fn call(&mut self, name: &str, args: &[Arg], dot: &Value, piped: Option<Value>) -> Res<Value> {
        // and/or evaluate lazily and return the deciding operand (Go 1.18+).
        if name == "and" || name == "or" {
            let total = args.len() + usize::from(piped.is_some());
            if total == 0 {
                return Err(format!("wrong number of args for {name}: want at least 1 got 0"));
            }
            let mut last = Value::Nil;
            for a in args {
                last = self.arg(a, dot, false)?;
                if last.truth() != (name == "and") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let nil_ok = matches!(
            name,
            "print" | "printf" | "println" | "html" | "js" | "urlquery" | "joinQuoted"
        );
        let mut values = Vec::with_capacity(args.len() + 1);
        for a in args {
            values.push(self.arg(a, dot, nil_ok)?);
        }
        values.extend(piped);
        call_builtin(name, &values)
    }
}

pub(super) fn fields(mut v: Value, chain: &[String]) -> Res<Value> {
    for name in chain {
        v = match v {
            Value::Struct(ref fs) => fs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("can't evaluate field {name} in type main.values"))?,
            Value::Nil => return Err(format!("nil data; no entry for key {name:?}")),
            ref other => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    other.type_name()
                ));
            }
        };
    }
    Ok(v)
}

pub(super) fn arity(name: &str, args: &[Value], min: usize, max: Option<usize>) -> Res<()> {
    let n = args.len();
    if n < min || max.is_some_and(|m| n > m) {
        return Err(format!("wrong number of args for {name}: got {n}"));
    }
    Ok(())
}

pub(super) fn call_builtin(name: &str, args: &[Value]) -> Res<Value> {
    match name {
        "not" => {
            arity(name, args, 1, Some(1))?;
            Ok(Value::Bool(!args[0].truth()))
        }
        "len" => {
            arity(name, args, 1, Some(1))?;
            match &args[0] {
                Value::Str(s) => Ok(Value::Int(i64::try_from(s.len()).unwrap_or(i64::MAX))),
                other => Err(format!("len of type {}", other.type_name())),
            }
        }
        "index" => {
            arity(name, args, 1, None)?;
            let mut v = args[0].clone();
            for i in &args[1..] {
                let idx = int_index(i)?;
                v = match v {
                    Value::Str(s) => Value::Uint(
                        u64::from(*s.as_bytes().get(idx).ok_or("index out of range")?),
                        "uint8",
                    ),
                    Value::Nil => return Err("index of untyped nil".into()),
                    other => return Err(format!("can't index item of type {}", other.type_name())),
                };
            }
            Ok(v)
        }
        "slice" => slice(args),
        "print" => Ok(Value::Str(sprint(args))),
        "println" => {
            let parts: Vec<String> = args.iter().map(print_value).collect();
            Ok(Value::Str(format!("{}\n", parts.join(" "))))
        }
        "printf" => {
            arity(name, args, 1, None)?;
            let Value::Str(format) = &args[0] else {
                return Err("printf's format must be a string".into());
            };
            Ok(Value::Str(sprintf(format, &args[1..])?))
        }
        "html" => Ok(Value::Str(html_escape(&escaper_text(args)))),
        "js" => Ok(Value::Str(js_escape(&escaper_text(args)))),
        "urlquery" => Ok(Value::Str(query_escape(&escaper_text(args)))),
        "eq" => {
            arity(name, args, 1, None)?;
            if args.len() == 1 {
                return Err("missing argument for comparison".into());
            }
            for other in &args[1..] {
                if compare(&args[0], other, true)? == Some(std::cmp::Ordering::Equal) {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, args, 2, Some(2))?;
            let ord = compare(&args[0], &args[1], name == "ne")?;
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match name {
                "ne" => ord != Some(Equal),
                "lt" => ord == Some(Less),
                "le" => matches!(ord, Some(Less | Equal)),
                "gt" => ord == Some(Greater),
                _ => matches!(ord, Some(Greater | Equal)),
            }))
        }
        "call" => {
            arity(name, args, 1, None)?;
            Err("call of a non-function".into())
        }
        "joinQuoted" => {
            arity(name, args, 1, Some(1))?;
            // joinQuoted(items []string): with no slices in the data, only nil (an empty list) converts.
            match &args[0] {
                Value::Nil => Ok(Value::Str(String::new())),
                other => Err(format!(
                    "joinQuoted: wrong type for value; expected []string; got {}",
                    other.type_name()
                )),
            }
        }
        other => Err(format!("function {other:?} not defined")),
    }
}

pub(super) fn int_index(v: &Value) -> Res<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("index out of range: {i}")),
        Value::Uint(u, _) => usize::try_from(*u).map_err(|_| format!("index out of range: {u}")),
        _ => Err(format!("cannot index slice/array with type {}", v.type_name())),
    }
}

/// Go's `slice item [i [j [k]]]`: `item[i:j]` on a string (by bytes) or a list.
pub(super) fn slice(args: &[Value]) -> Res<Value> {
    arity("slice", args, 1, None)?;
    let (item, indexes) = (&args[0], &args[1..]);
    let idx: Vec<usize> = indexes.iter().map(int_index).collect::<Res<_>>()?;
    let len = match item {
        Value::Str(s) => {
            if idx.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::Nil => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let cap = idx.get(2).copied().unwrap_or(len);
    let to = idx.get(1).copied().unwrap_or(len);
    let from = idx.first().copied().unwrap_or(0);
    if cap > len || to > cap || from > to {
        return Err("index out of range".into());
    }
    match item {
        Value::Str(s) => s
            .get(from..to)
            .map(|s| Value::Str(s.to_owned()))
            .ok_or_else(|| "slice cuts a UTF-8 character (Go would write invalid UTF-8)".to_owned()),
        _ => unreachable!("checked above"),
    }
}

#[derive(PartialEq)]
pub(super) enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Str,
    Other,
}

pub(super) fn kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Uint(..) => Kind::Uint,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        _ => Kind::Other,
    }
}

/// Go's comparison of basic kinds; `Ok(None)` when unordered (bools). Mixed signed/unsigned integers compare by
/// value; other mixed kinds are an error, as in Go.
pub(super) fn compare(a: &Value, b: &Value, equality: bool) -> Res<Option<std::cmp::Ordering>> {
    use Value::*;
    Ok(match (a, b) {
        (Int(x), Uint(y, _)) => Some(if *x < 0 {
            std::cmp::Ordering::Less
        } else {
            (*x as u64).cmp(y)
        }),
        (Uint(x, _), Int(y)) => Some(if *y < 0 {
            std::cmp::Ordering::Greater
        } else {
            x.cmp(&(*y as u64))
        }),
        _ if kind(a) != kind(b) => return Err("incompatible types for comparison".into()),
        (Bool(x), Bool(y)) => {
            if !equality {
                return Err("invalid type for comparison".into());
            }
            (x == y).then_some(std::cmp::Ordering::Equal)
        }
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Uint(x, _), Uint(y, _)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        _ => return Err("invalid type for comparison".into()),
    })
}
