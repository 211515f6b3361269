//! The wire layer: everything cms knows about the Claude Code CLI and nothing else.
//!
//! - [`message`]: typed stream-json lines the CLI prints (unknown types and fields are kept);
//! - [`outgoing`]: the lines cms writes on the CLI's stdin (user turns, control requests and responses);
//! - [`cost`]: the CLI's answer to `get_session_cost`, read back into a figure;
//! - [`argv`]: the command line of a long-lived `claude -p --input-format stream-json` process.
//!
//! See `docs/PROTOCOL.md` for the protocol as observed on the real CLI.

pub mod argv;
pub mod cost;
pub mod message;
pub mod outgoing;

pub use argv::ClaudeArgs;
pub use message::{
    AssistantMessage, ContentBlock, ControlRequest, ControlRequestBody, ControlResponse, Message,
    PermissionDenial, ResultMessage, SystemMessage, ToolPermissionRequest, UserMessage,
};
