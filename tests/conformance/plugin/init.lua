-- A cms plugin that tests/conformance/run.sh installs in the conformance run's empty
-- config dir. Its tools stand in for three of the suite's fixture tools, so that
-- those scenarios check cms's own plugin path over HTTP: a handler's value comes
-- back as text, a handler's error as a result with isError, and an input schema
-- reaches tools/list as the plugin wrote it (JSON Schema 2020-12 keywords included).
local schema_2020_12 = cms.json.decode([[
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "$defs": {
    "address": {
      "$anchor": "addressDef",
      "type": "object",
      "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
    }
  },
  "properties": {
    "name": { "type": "string" },
    "address": { "$ref": "#/$defs/address" },
    "contactMethod": { "type": "string", "enum": ["phone", "email"] },
    "phone": { "type": "string" },
    "email": { "type": "string" }
  },
  "allOf": [ { "anyOf": [ { "required": ["phone"] }, { "required": ["email"] } ] } ],
  "if": { "properties": { "contactMethod": { "const": "phone" } }, "required": ["contactMethod"] },
  "then": { "required": ["phone"] },
  "else": { "required": ["email"] },
  "additionalProperties": false
}
]])

return {
  name = "conformance",
  version = "1.0",
  tools = {
    {
      name = "test_simple_text",
      description = "Answers with a line of text",
      handler = function() return "This is a simple text response for testing." end,
    },
    {
      name = "test_error_handling",
      description = "Always fails",
      handler = function() error("This tool intentionally returns an error for testing") end,
    },
    {
      name = "json_schema_2020_12_tool",
      description = "Tool with JSON Schema 2020-12 features",
      input_schema = schema_2020_12,
      handler = function(args) return args end,
    },
  },
}
