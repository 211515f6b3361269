// Loaded with `node --import` before the MCP conformance suite (tests/conformance/run.sh).
//
// 1. The suite has no option to send a header, and cms's /mcp asks for
//    `Authorization: Bearer TOKEN`: every request the suite makes to the server
//    under test (the host:port of $CMS_CONFORMANCE_URL, and only there) gets the
//    token of $CMS_CONFORMANCE_TOKEN, unless the request sets its own. The server
//    checks the token as for every client; nothing of cms changes for the tests.
// 2. The suite imports `globSync` from `fs`, which Node has only since 22; only its
//    `tier-check` command calls it. On older Node its imports of `fs` get a stub.
import http from "node:http";
import fs from "node:fs";
import { createRequire, register } from "node:module";

if (!fs.globSync) {
  const stub =
    'export * from "node:fs"; export function globSync() {' +
    ' throw new Error("fs.globSync needs Node 22 (only `conformance tier-check` uses it)"); }';
  const hooks = `
    export async function resolve(specifier, context, next) {
      if ((specifier === "fs" || specifier === "node:fs") &&
          context.parentURL && context.parentURL.includes("/@modelcontextprotocol/conformance/")) {
        return { url: ${JSON.stringify("data:text/javascript," + encodeURIComponent(stub))}, shortCircuit: true };
      }
      return next(specifier, context);
    }`;
  register("data:text/javascript," + encodeURIComponent(hooks));
}

const url = process.env.CMS_CONFORMANCE_URL;
const token = process.env.CMS_CONFORMANCE_TOKEN;
if (url && token) {
  const target = new URL(url).host;
  const bearer = `Bearer ${token}`;

  // headers in any of the shapes undici and node:http take, with the token added.
  const withToken = (headers) => {
    if (headers == null) return { authorization: bearer };
    if (Array.isArray(headers)) {
      for (let i = 0; i < headers.length; i += 2) {
        if (String(headers[i]).toLowerCase() === "authorization") return headers;
      }
      return [...headers, "authorization", bearer];
    }
    if (Object.getPrototypeOf(headers) !== Object.prototype && typeof headers[Symbol.iterator] === "function") {
      const flat = [];
      for (const [k, v] of headers) flat.push(k, v);
      return withToken(flat);
    }
    if (Object.keys(headers).some((k) => k.toLowerCase() === "authorization")) return headers;
    return { ...headers, authorization: bearer };
  };

  // fetch (Node's own undici) and the suite's undici share the global dispatcher.
  const { Agent, setGlobalDispatcher } = createRequire(process.argv[1])("undici");
  class WithToken extends Agent {
    dispatch(opts, handler) {
      if (new URL(String(opts.origin)).host === target) {
        opts = { ...opts, headers: withToken(opts.headers) };
      }
      return super.dispatch(opts, handler);
    }
  }
  setGlobalDispatcher(new WithToken());

  // A few checks send raw requests with node:http.
  const request = http.request;
  http.request = function (options, ...rest) {
    if (options && typeof options === "object" && !(options instanceof URL)) {
      const host = `${options.hostname ?? options.host}:${options.port}`;
      if (host === target) options = { ...options, headers: withToken(options.headers) };
    }
    return request.call(this, options, ...rest);
  };
}
