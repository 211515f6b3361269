//! The LuaLS description of the `cms` API (`---@meta`), kept in the repository at
//! `scripts/types/cms.lua` and printed by `cms lua-types`.

/// The stub file's text.
pub const CMS_META: &str = include_str!("../../scripts/types/cms.lua");
