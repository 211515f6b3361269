//! Sessions as MCP resources: `cms://sessions/NAME` is a session's status and its
//! history (each prompt with its answer and cost), as JSON. A client can list them
//! and read one, so a Claude Code user can bring a session's transcript into a
//! conversation (`@cms:cms://sessions/NAME`). A URI that names no session is a
//! `-32602` error carrying the URI.

use super::server::CmsServer;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::ErrorData as McpError;
use serde_json::json;

const PREFIX: &str = "cms://sessions/";
const JSON: &str = "application/json";

impl CmsServer {
    pub(super) fn session_resources(&self) -> Result<ListResourcesResult, McpError> {
        let sessions = self
            .inner
            .manager
            .list()
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let resources = sessions
            .iter()
            .map(|rec| {
                let mut r = Resource::new(format!("{PREFIX}{}", rec.name), rec.name.clone())
                    .with_mime_type(JSON);
                r.description = Some(format!(
                    "Session '{}' ({}, ${:.4}, {} turns): its status and history",
                    rec.name,
                    rec.state.as_str(),
                    rec.total_cost_usd,
                    rec.total_turns
                ));
                r
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    pub(super) fn session_resource_templates(&self) -> ListResourceTemplatesResult {
        let mut t =
            ResourceTemplate::new(format!("{PREFIX}{{name}}"), "session").with_mime_type(JSON);
        t.description = Some("A cms session's status and history, by name".into());
        ListResourceTemplatesResult::with_all_items(vec![t])
    }

    pub(super) fn read_session_resource(&self, uri: &str) -> Result<ReadResourceResult, McpError> {
        let not_found = |why: String| McpError::invalid_params(why, Some(json!({ "uri": uri })));
        let Some(name) = uri.strip_prefix(PREFIX).filter(|n| !n.is_empty()) else {
            return Err(not_found(format!(
                "no such resource: {uri} (cms has {PREFIX}NAME for each session; resources/list shows them)"
            )));
        };
        let m = &self.inner.manager;
        let rec = m.status(name).map_err(|_| {
            not_found(format!(
                "no session '{name}' ({uri}); resources/list shows them"
            ))
        })?;
        let history = m
            .history(name)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let body = json!({
            "session": crate::views::record_json(&rec),
            "history": crate::views::history_json(&history),
        });
        let text = serde_json::to_string_pretty(&body).unwrap_or_default();
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            text, uri,
        )
        .with_mime_type(JSON)]))
    }
}
