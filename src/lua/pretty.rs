//! Lua values printed for people: tables indented, keys sorted, cycles cut.

use mlua::Value;
use std::collections::HashSet;

/// Render a value the way the REPL shows it.
pub fn pretty(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0, &mut HashSet::new());
    out
}

fn write_value(out: &mut String, v: &Value, indent: usize, seen: &mut HashSet<usize>) {
    match v {
        Value::Nil => out.push_str("nil"),
        Value::Boolean(b) => out.push_str(&b.to_string()),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&format!("{:?}", s.to_string_lossy())),
        Value::Table(t) => {
            let id = t.to_pointer() as usize;
            if !seen.insert(id) {
                out.push_str("<cycle>");
                return;
            }
            let mut entries: Vec<(Value, Value)> = t
                .clone()
                .pairs::<Value, Value>()
                .filter_map(Result::ok)
                .collect();
            if entries.is_empty() {
                out.push_str("{}");
                seen.remove(&id);
                return;
            }
            let len = t.raw_len();
            let is_array = len == entries.len();
            entries.sort_by_key(|(k, _)| key_order(k));
            out.push_str("{\n");
            for (k, val) in &entries {
                out.push_str(&"  ".repeat(indent + 1));
                if !is_array {
                    match k {
                        Value::String(s) if is_identifier(&s.to_string_lossy()) => {
                            out.push_str(&s.to_string_lossy());
                        }
                        other => {
                            out.push('[');
                            write_value(out, other, indent + 1, seen);
                            out.push(']');
                        }
                    }
                    out.push_str(" = ");
                }
                write_value(out, val, indent + 1, seen);
                out.push_str(",\n");
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
            seen.remove(&id);
        }
        Value::UserData(_) => match v.to_string() {
            Ok(s) => out.push_str(&s),
            Err(_) => out.push_str("<userdata>"),
        },
        Value::Function(_) => out.push_str("<function>"),
        Value::Thread(_) => out.push_str("<coroutine>"),
        Value::Error(e) => out.push_str(&format!("<error: {e}>")),
        other => out.push_str(&format!("<{}>", other.type_name())),
    }
}

fn key_order(k: &Value) -> (u8, i64, String) {
    match k {
        Value::Integer(i) => (0, *i, String::new()),
        Value::Number(n) => (0, *n as i64, String::new()),
        Value::String(s) => (1, 0, s.to_string_lossy()),
        other => (2, 0, format!("{other:?}")),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_indented_sorted_and_cycles_cut() {
        let lua = mlua::Lua::new();
        let v: Value = lua
            .load(r#"local t = {b = 2, a = "x", list = {1, 2}, ["odd key"] = true}; t.self = t; return t"#)
            .eval()
            .unwrap();
        let s = pretty(&v);
        assert_eq!(
            s,
            "{\n  a = \"x\",\n  b = 2,\n  list = {\n    1,\n    2,\n  },\n  [\"odd key\"] = true,\n  self = <cycle>,\n}"
        );
        assert_eq!(pretty(&Value::Nil), "nil");
        assert_eq!(pretty(&lua.load("{}").eval::<Value>().unwrap()), "{}");
    }
}
