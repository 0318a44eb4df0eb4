// Validates an AsyncAPI document with the official parser (schema and Spectral rules).
// Usage: node validate.mjs FILE. Prints one JSON object: {"valid": bool, "diagnostics": [...]},
// each diagnostic with its severity (error, warning, information, hint), code, message and path.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "information", "hint"];

const text = await readFile(process.argv[2], "utf-8");
const { document, diagnostics } = await new Parser().parse(text);
const report = {
  valid: document !== undefined,
  diagnostics: diagnostics.map((d) => ({
    severity: SEVERITIES[d.severity],
    code: d.code,
    message: d.message,
    path: d.path.join("/"),
  })),
};
console.log(JSON.stringify(report, null, 2));
process.exitCode = report.valid ? 0 : 1;
