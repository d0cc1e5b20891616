//! Executing a parsed template against the data, with Go's builtin functions and CAREN's `joinQuoted`.

use std::collections::HashMap;

use super::fmt::{escaper_text, html_escape, js_escape, print_value, query_escape, sprint, sprintf};
use super::parse::{Arg, Node, Pipe};
use super::{Res, Value};

/// Deepest nesting of `{{template}}` calls, as a guard against recursion.
const MAX_DEPTH: usize = 1000;

/// Most `{{range}}` iterations one rendering may run. Go has no such limit, but a values template never needs a
/// million iterations, and without one `{{ range 1000000000000 }}` would hold an executor task for hours.
pub(super) const MAX_ITERATIONS: u64 = 1_000_000;

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
    /// `{{range}}` iterations run so far, against [`MAX_ITERATIONS`].
    pub(super) iterations: u64,
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
            Node::Range(pipe, body, else_body) => return self.range(pipe, body, else_body, dot),
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

    /// `{{range}}`. The pipeline's variables are declared (or assigned) with the ranged value first, as in Go, so
    /// an `{{else}}` sees them holding it. With the data a values template has (strings, one `uint16`, booleans,
    /// and no maps, slices or functions), only nil and integers can be ranged over: an integer `n` yields `0..n`
    /// in its own type (Go 1.22), one variable at most.
    fn range(&mut self, pipe: &Pipe, body: &[Node], else_body: &[Node], dot: &Value) -> Res<Flow> {
        let mark = self.vars.len();
        let result = self.range_inner(pipe, body, else_body, dot);
        self.vars.truncate(mark);
        result
    }

    fn range_inner(&mut self, pipe: &Pipe, body: &[Node], else_body: &[Node], dot: &Value) -> Res<Flow> {
        let value = self.pipe(pipe, dot)?;
        let (count, make): (u64, Box<dyn Fn(u64) -> Value>) = match &value {
            Value::Nil => (0, Box::new(|_| Value::Nil)),
            Value::Int(_) | Value::Uint(..) if pipe.decl.len() > 1 => {
                return Err(format!(
                    "can't use {} to iterate over more than one variable",
                    print_value(&value)
                ));
            }
            // A negative count runs no iteration, as in Go.
            Value::Int(n) => (
                u64::try_from(*n).unwrap_or(0),
                Box::new(|i| Value::Int(i64::try_from(i).unwrap_or(i64::MAX))),
            ),
            Value::Uint(n, t) => {
                let t = *t;
                (*n, Box::new(move |i| Value::Uint(i, t)))
            }
            other => return Err(format!("range can't iterate over {}", print_value(other))),
        };
        if count == 0 {
            // Go stops a {{break}} at the innermost range statement even when it comes from that range's
            // {{else}} (which parses only inside an outer range): the statement ends, the outer loop goes on. A
            // {{continue}} there goes on to the outer loop's next iteration.
            return match self.scoped(else_body, dot)? {
                Flow::Break => Ok(Flow::Normal),
                flow => Ok(flow),
            };
        }
        // The declared variable is the topmost one now (a parenthesized declaration inside the pipeline may sit
        // below it); each iteration's body is scoped, so it stays on top.
        let top = self.vars.len().saturating_sub(1);
        for i in 0..count {
            self.iterations += 1;
            if self.iterations > MAX_ITERATIONS {
                return Err(format!(
                    "more than {MAX_ITERATIONS} range iterations; konnector stops a values template there"
                ));
            }
            let elem = make(i);
            if let Some(name) = pipe.decl.first() {
                if pipe.assign {
                    self.set(name, elem.clone(), true)?;
                } else if let Some(slot) = self.vars.get_mut(top) {
                    slot.1 = elem.clone();
                }
            }
            match self.scoped(body, &elem)? {
                Flow::Break => break,
                Flow::Normal | Flow::Continue => {}
            }
        }
        Ok(Flow::Normal)
    }

    /// Declares `name` (pushes it), or with `assign` changes the innermost variable of that name, which must
    /// exist when the assignment runs.
    fn set(&mut self, name: &str, value: Value, assign: bool) -> Res<()> {
        if assign {
            let slot = self
                .vars
                .iter_mut()
                .rev()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("undefined variable: {name}"))?;
            slot.1 = value;
        } else {
            self.vars.push((name.to_owned(), value));
        }
        Ok(())
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
            self.set(name, value.clone(), pipe.assign)?;
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

    /// Evaluates a function's argument. The `nil` constant is a missing value, which every builtin takes (Go
    /// passes most arguments as `reflect.Value` or `any`, both of which can be nil); `printf`'s format, a
    /// `string`, refuses it when it is checked.
    fn arg(&mut self, arg: &Arg, dot: &Value) -> Res<Value> {
        match arg {
            Arg::Nil => Ok(Value::Nil),
            other => self.operand(other, dot),
        }
    }

    fn call(&mut self, name: &str, args: &[Arg], dot: &Value, piped: Option<Value>) -> Res<Value> {
        // Go checks the number of arguments before evaluating any.
        let total = args.len() + usize::from(piped.is_some());
        if let Some((min, max)) = arity_of(name)
            && (total < min || max.is_some_and(|m| total > m))
        {
            return Err(format!("wrong number of args for {name}: got {total}"));
        }
        // and/or evaluate lazily and return the deciding operand (Go 1.18+); a piped value is the last operand.
        if name == "and" || name == "or" {
            let mut last = Value::Nil;
            for a in args {
                last = self.arg(a, dot)?;
                if last.truth() != (name == "and") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let mut values = Vec::with_capacity(total);
        for a in args {
            values.push(self.arg(a, dot)?);
        }
        values.extend(piped);
        call_builtin(name, &values)
    }
}

/// Go's parameter counts of the builtins: (at least, at most).
fn arity_of(name: &str) -> Option<(usize, Option<usize>)> {
    Some(match name {
        "and" | "or" | "index" | "slice" | "printf" | "eq" | "call" => (1, None),
        "not" | "len" | "joinQuoted" => (1, Some(1)),
        "ne" | "lt" | "le" | "gt" | "ge" => (2, Some(2)),
        "print" | "println" | "html" | "js" | "urlquery" => (0, None),
        _ => return None,
    })
}

pub(super) fn fields(mut v: Value, chain: &[String]) -> Res<Value> {
    for name in chain {
        v = match v {
            Value::Struct(ref fs, type_name) => fs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("can't evaluate field {name} in type {type_name}"))?,
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
            if args[0] == Value::Nil {
                return Err("index of untyped nil".into());
            }
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
        "js" => Ok(Value::Str(js_escape(&escaper_text(args))?)),
        "urlquery" => Ok(Value::Str(query_escape(&escaper_text(args)))),
        "eq" => {
            arity(name, args, 1, None)?;
            Ok(Value::Bool(eq(&args[0], &args[1..])?))
        }
        "ne" => {
            arity(name, args, 2, Some(2))?;
            Ok(Value::Bool(!eq(&args[0], &args[1..])?))
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(name, args, 2, Some(2))?;
            let (a, b) = (&args[0], &args[1]);
            // As Go builds them: le is lt or eq, gt is not le, ge is not lt.
            let le = || -> Res<bool> { Ok(lt(a, b)? || eq(a, std::slice::from_ref(b))?) };
            Ok(Value::Bool(match name {
                "lt" => lt(a, b)?,
                "le" => le()?,
                "gt" => !le()?,
                _ => !lt(a, b)?,
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

/// Go's basic kinds for comparison; `None` for the data struct, which has none.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Str,
}

pub(super) fn kind(v: &Value) -> Option<Kind> {
    Some(match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Uint(..) => Kind::Uint,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        Value::Nil | Value::Struct(..) => return None,
    })
}

/// Go's `eq a b c...`: whether `a` equals any of the others, compared in order and stopping at the first that
/// does. Signed and unsigned integers compare by value; other kinds must match (an error otherwise, unless an
/// earlier operand already matched); two data structs compare field by field; nil equals only nil.
pub(super) fn eq(a: &Value, others: &[Value]) -> Res<bool> {
    if others.is_empty() {
        return Err("missing argument for comparison".into());
    }
    for b in others {
        let equal = match (a, b) {
            // A missing value equals only another missing value, and compares with anything without error.
            (Value::Nil, _) | (_, Value::Nil) => matches!((a, b), (Value::Nil, Value::Nil)),
            (Value::Int(x), Value::Uint(y, _)) | (Value::Uint(y, _), Value::Int(x)) => {
                u64::try_from(*x).is_ok_and(|x| x == *y)
            }
            _ if kind(a) != kind(b) => {
                return Err(format!(
                    "incompatible types for comparison: {} and {}",
                    a.type_name(),
                    b.type_name()
                ));
            }
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Uint(x, _), Value::Uint(y, _)) => x == y,
            (Value::Float(x), Value::Float(y)) => x == y,
            (Value::Str(x), Value::Str(y)) => x == y,
            (Value::Struct(x, s), Value::Struct(y, t)) => x == y && s == t,
            _ => return Err("invalid type for comparison".into()),
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt a b`: ordered kinds only (not booleans, not the struct); signed and unsigned integers by value.
pub(super) fn lt(a: &Value, b: &Value) -> Res<bool> {
    let (Some(ka), Some(kb)) = (kind(a), kind(b)) else {
        return Err("invalid type for comparison".into());
    };
    Ok(match (a, b) {
        (Value::Int(x), Value::Uint(y, _)) => u64::try_from(*x).map_or(true, |x| x < *y),
        (Value::Uint(x, _), Value::Int(y)) => u64::try_from(*y).is_ok_and(|y| *x < y),
        _ if ka != kb => {
            return Err(format!(
                "incompatible types for comparison: {} and {}",
                a.type_name(),
                b.type_name()
            ));
        }
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Uint(x, _), Value::Uint(y, _)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Str(x), Value::Str(y)) => x < y,
        _ => return Err("invalid type for comparison".into()),
    })
}
