// Fossil deltas in Node.js for Herald's differential tests: the npm
// fossil-delta package (the JavaScript implementation Centrifugo's clients
// use) and, when given, herald.js's own applyFossilDelta.
//
// stdin: one JSON object {"herald": PATH (optional), "cases": [{"op", "a", "b"}]}
// with a and b base64: op "create" makes the delta from a to b with npm,
// "apply" applies delta b to a with npm, "herald-apply" applies it with
// herald.js. stdout: a JSON array, for each case {"out": base64} or
// {"error": MESSAGE}.
import { readFileSync } from 'node:fs';
import { createDelta, applyDelta } from 'fossil-delta';

const input = JSON.parse(readFileSync(0, 'utf8'));
let heraldApply = null;
if (input.herald) {
  // A data: URL is an ES module whatever the file's name or the nearest
  // package.json say; herald.js touches no browser global on import.
  const src = readFileSync(input.herald);
  const mod = await import('data:text/javascript;base64,' + src.toString('base64'));
  heraldApply = mod.applyFossilDelta;
}
const b = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const out = input.cases.map((c) => {
  try {
    let r;
    switch (c.op) {
      case 'create': r = createDelta(b(c.a), b(c.b)); break;
      case 'apply': r = applyDelta(b(c.a), b(c.b)); break;
      case 'herald-apply': r = heraldApply(b(c.a), b(c.b)); break;
      default: throw new Error('unknown op ' + c.op);
    }
    return { out: Buffer.from(r).toString('base64') };
  } catch (e) {
    return { error: String(e && e.message || e) };
  }
});
process.stdout.write(JSON.stringify(out));
