// Validates an AsyncAPI document with the official parser (@asyncapi/parser, which runs the
// specification's JSON schema and its Spectral rules). Prints the diagnostics as JSON; exit 1 on any error.
// Usage: node validate.mjs document.json   (NODE_PATH: the node_modules holding @asyncapi/parser)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.NODE_PATH.split(":")[0] + "/");
const { Parser, DiagnosticSeverity } = require("@asyncapi/parser");

const text = readFileSync(process.argv[2], "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const named = { [DiagnosticSeverity.Error]: "error", [DiagnosticSeverity.Warning]: "warning",
                [DiagnosticSeverity.Information]: "info", [DiagnosticSeverity.Hint]: "hint" };
const report = diagnostics.map((d) => ({ severity: named[d.severity], code: d.code, message: d.message,
                                          path: d.path.join("/") }));
console.log(JSON.stringify({ parsed: Boolean(document), version: document?.version(), diagnostics: report }));
process.exit(document && !report.some((d) => d.severity === "error") ? 0 : 1);
