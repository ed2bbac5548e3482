// Grades one host with the MDN HTTP Observatory scanner (its JS API, scan())
// and prints the grade, the score and each test's result. Exit status: 0 for
// A+, 1 for any other grade, 2 when the scanner refused to grade at all.
//
// Usage (run.sh copies this file next to node_modules, so the package
// resolves from build/observatory/): node scan.mjs HOST
//
// scan(host) fetches http://HOST/ and https://HOST/ on the default ports (it
// takes no port), follows redirects, then /robots.txt and a CORS preflight.
// When it refuses to grade (it does for a status on / other than 2xx, 3xx,
// 401 or 403), the same tests are run on the same retrieval and scored as
// scan() scores them, printed as a DIAGNOSTIC only: the exit status is 2.
import { scan } from "@mdn/mdn-http-observatory";
import { ALL_TESTS } from "@mdn/mdn-http-observatory/src/constants.js";
import { MINIMUM_SCORE_FOR_EXTRA_CREDIT } from "@mdn/mdn-http-observatory/src/grader/charts.js";
import {
  getGradeForScore,
  getScoreDescription,
  getScoreModifier,
} from "@mdn/mdn-http-observatory/src/grader/grader.js";
import { retrieve } from "@mdn/mdn-http-observatory/src/retriever/retriever.js";

const host = process.argv[2];
if (!host) {
  console.error("usage: node scan.mjs HOST");
  process.exit(64);
}

// Fields of a test's output worth showing beside its result.
const DETAIL = [
  "data",
  "maxAge",
  "includeSubDomains",
  "preload",
  "route",
  "destination",
  "statusCode",
  "sameSite",
  "httpOnly",
  "secure",
];

function show(value) {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s.length > 200 ? s.slice(0, 197) + "..." : s;
}

function printTests(tests) {
  const names = Object.keys(tests);
  const width = Math.max(...names.map((n) => n.length));
  for (const name of names) {
    const t = tests[name];
    const mod = t.scoreModifier ?? getScoreModifier(t.result);
    console.log(
      `  ${t.pass ? "PASS" : "FAIL"}  ${name.padEnd(width)}  ${String(mod >= 0 ? "+" + mod : mod).padStart(4)}  ${t.result}`
    );
    const desc = t.scoreDescription ?? getScoreDescription(t.result);
    if (desc) console.log(`        ${desc.replace(/<[^>]+>/g, "").replace(/\s+/g, " ").trim()}`);
    for (const k of DETAIL) {
      if (k in t && t[k] !== null && t[k] !== undefined && !(Array.isArray(t[k]) && !t[k].length))
        console.log(`        ${k}: ${show(t[k])}`);
    }
  }
}

function printHeaders(status, headers) {
  console.log(`response to GET https://${host}/ (after redirects): ${status}`);
  for (const [k, v] of Object.entries(headers ?? {})) console.log(`  ${k}: ${show(v)}`);
}

// scan()'s own scoring (src/scanner/index.js), for the diagnostic only.
function score(results) {
  let passed = 0;
  let withExtra = 100;
  let uncurved = 100;
  for (const r of results) {
    if (!r.result) continue;
    r.scoreDescription = getScoreDescription(r.result);
    r.scoreModifier = getScoreModifier(r.result);
    passed += r.pass ? 1 : 0;
    withExtra += r.scoreModifier;
    if (r.scoreModifier < 0) uncurved += r.scoreModifier;
  }
  const final = getGradeForScore(uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtra : uncurved);
  return { ...final, passed };
}

let result;
try {
  result = await scan(host);
} catch (e) {
  const msg = e instanceof Error ? e.message : String(e);
  console.log(`scanner: no grade for ${host}: ${msg}`);
  const r = await retrieve(host);
  if (!r.responses.auto) process.exit(2);
  const auto = r.responses.auto;
  printHeaders(auto.status, auto.headers);
  const results = ALL_TESTS.map((test) => test(r));
  const s = score(results);
  const tests = Object.fromEntries(results.map((x) => [x.constructor.name, x]));
  console.log(
    `DIAGNOSTIC (not a grade; the scanner refused to grade): the same tests on the same ` +
      `responses would give ${s.grade}, score ${s.score}, ${s.passed}/${results.length} passed`
  );
  printTests(tests);
  process.exit(2);
}

const s = result.scan;
printHeaders(s.statusCode, s.responseHeaders);
console.log(
  `grade: ${s.grade}  score: ${s.score}  tests passed: ${s.testsPassed}/${s.testsQuantity}  ` +
    `(algorithm ${s.algorithmVersion})`
);
printTests(result.tests);
process.exit(s.grade === "A+" ? 0 : 1);
