// Validates an AsyncAPI document with the official parser and prints its
// diagnostics as JSON lines. Exit 0: no error-level diagnostic; 1: errors;
// 2: usage or unreadable file.
//
//   node validate.mjs <asyncapi.json>
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs <asyncapi.json>');
  process.exit(2);
}
let text;
try {
  text = await readFile(file, 'utf8');
} catch (err) {
  console.error(`cannot read ${file}: ${err.message}`);
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text, { source: file });
const severities = ['error', 'warning', 'information', 'hint'];
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  console.log(JSON.stringify({
    severity: severities[d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path.join('/'),
  }));
}
if (!document || errors > 0) {
  console.error(`${errors} error(s); document ${document ? 'parsed' : 'NOT parsed'}`);
  process.exit(1);
}
console.error(`valid AsyncAPI ${document.version()} with ${document.channels().length} channel(s)`);
