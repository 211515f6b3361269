//! Lines cms writes on the CLI's stdin: user turns, control requests, control responses.
//!
//! Each function returns one JSON line *without* the trailing newline. A malformed
//! stdin line kills the CLI, so everything here goes through `serde_json`.

use serde_json::{json, Value};

/// A user turn with plain text.
pub fn user_text(text: &str) -> String {
    json!({
        "type": "user",
        "session_id": "",
        "parent_tool_use_id": null,
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    })
    .to_string()
}

/// A control request from cms to the CLI (`initialize`, `interrupt`, `set_permission_mode`, ...).
pub fn control_request(request_id: &str, subtype: &str, mut fields: Value) -> String {
    if let Some(obj) = fields.as_object_mut() {
        obj.insert("subtype".into(), subtype.into());
    } else {
        fields = json!({ "subtype": subtype });
    }
    json!({"type": "control_request", "request_id": request_id, "request": fields}).to_string()
}

pub fn interrupt(request_id: &str) -> String {
    control_request(request_id, "interrupt", json!({}))
}

pub fn set_permission_mode(request_id: &str, mode: &str) -> String {
    control_request(request_id, "set_permission_mode", json!({ "mode": mode }))
}

pub fn set_model(request_id: &str, model: &str) -> String {
    control_request(request_id, "set_model", json!({ "model": model }))
}

/// Allow a `can_use_tool` request. The CLI requires `updatedInput`: pass the original
/// input to run the tool unchanged, or a rewritten one.
pub fn allow_tool(request_id: &str, updated_input: &Value) -> String {
    success_response(
        request_id,
        json!({"behavior": "allow", "updatedInput": updated_input}),
    )
}

/// Deny a `can_use_tool` request; the model sees `message` as the tool's error.
/// With `interrupt`, the CLI also ends the turn.
pub fn deny_tool(request_id: &str, message: &str, interrupt: bool) -> String {
    let mut body = json!({"behavior": "deny", "message": message});
    if interrupt {
        body["interrupt"] = Value::Bool(true);
    }
    success_response(request_id, body)
}

/// A successful answer to a control request the CLI sent.
pub fn success_response(request_id: &str, response: Value) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    })
    .to_string()
}

/// An error answer to a control request the CLI sent (e.g. a subtype cms does not handle).
pub fn error_response(request_id: &str, error: &str) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "a stdin line must be one line");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn user_turn_has_the_shape_the_cli_accepts() {
        let v = parse(&user_text("multi\nline \"quoted\""));
        assert_eq!(v["type"], "user");
        assert_eq!(v["message"]["role"], "user");
        assert_eq!(v["message"]["content"][0]["text"], "multi\nline \"quoted\"");
    }

    #[test]
    fn control_requests_carry_subtype_and_id() {
        let v = parse(&interrupt("req_1"));
        assert_eq!(v["type"], "control_request");
        assert_eq!(v["request_id"], "req_1");
        assert_eq!(v["request"]["subtype"], "interrupt");
        let v = parse(&set_permission_mode("req_2", "acceptEdits"));
        assert_eq!(
            v["request"],
            json!({"subtype": "set_permission_mode", "mode": "acceptEdits"})
        );
        let v = parse(&set_model("req_3", "haiku"));
        assert_eq!(v["request"]["model"], "haiku");
    }

    #[test]
    fn allow_always_echoes_updated_input_and_deny_carries_a_message() {
        let input = json!({"file_path": "/a", "content": "x"});
        let v = parse(&allow_tool("id1", &input));
        assert_eq!(v["response"]["subtype"], "success");
        assert_eq!(v["response"]["request_id"], "id1");
        assert_eq!(v["response"]["response"]["behavior"], "allow");
        assert_eq!(v["response"]["response"]["updatedInput"], input);
        let v = parse(&deny_tool("id2", "protected path", false));
        assert_eq!(
            v["response"]["response"],
            json!({"behavior": "deny", "message": "protected path"})
        );
        let v = parse(&deny_tool("id3", "stop", true));
        assert_eq!(v["response"]["response"]["interrupt"], true);
        let v = parse(&error_response("id4", "unsupported"));
        assert_eq!(v["response"]["subtype"], "error");
        assert_eq!(v["response"]["error"], "unsupported");
    }
}
