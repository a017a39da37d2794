// TrainConfig's rules in the page, read from page.json (generated from src/digitlab/config.py by
// digitlab.browser.rules; nothing here restates a limit or a sentence). `check` turns the form's
// texts into a resolved config, or the sentence `digitlab train` prints for the first bad field.
//   import { loadRules, check } from "./rules.js";
//   const rules = await loadRules("static/page.json");
//   const { config, field, sentence } = check(rules, { learning_rate: "-1" });
//   // field "learning_rate", sentence "learning_rate must be a number above 0 and at most 10, got -1.0."

export async function loadRules(url) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw new Error(`The page's rules (${url}) could not be read: ${response.status}.`);
  return response.json();
}

// A number or text written as Python's repr writes it (the sentences quote values that way).
export function pythonRepr(value, type) {
  if (typeof value === "string") return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
  if (typeof value === "number" && type === "float") {
    if (!Number.isFinite(value)) return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
    if (Number.isInteger(value) && Math.abs(value) < 1e16) return `${value}.0`;
    const exponent = Math.floor(Math.log10(Math.abs(value)));
    if (exponent < -4 || exponent >= 16) {
      const [mantissa, power] = value.toExponential().split("e");
      const sign = power.startsWith("-") ? "-" : "+";
      return `${mantissa}e${sign}${power.replace(/^[+-]/, "").padStart(2, "0")}`;
    }
    return String(value);
  }
  return String(value);
}

// The value the form's text stands for: a number where the field takes one (as `digitlab train`'s flags
// parse it: "3" for a float field is 3.0), else the text itself (then the field's sentence says why not).
function parse(text, rule) {
  if (rule.type === "int" && /^[+-]?\d+$/.test(text)) return parseInt(text, 10);
  if (rule.type === "float" && text !== "" && Number.isFinite(Number(text))) return Number(text);
  return text;
}

function bad(rule, value) {
  if (rule.choices) return !rule.choices.includes(value);
  if (rule.type === "int" || rule.type === "float") {
    if (typeof value !== "number" || (rule.type === "int" && !Number.isInteger(value))) return true;
    return (rule.min !== null && value < rule.min) || (rule.max !== null && value > rule.max);
  }
  return false;
}

// `texts`: field name -> the form's text ("" or missing: the net's default). Returns
// { config } with every page field resolved, or { field, sentence } for the first bad one.
export function check(rules, texts) {
  const given = {};
  for (const [name, rule] of Object.entries(rules.fields)) {
    const text = (texts[name] ?? "").trim();
    if (text === "") continue;
    const value = parse(text, rule);
    if (bad(rule, value)) return { field: name, sentence: rule.sentence.replace("{value}", pythonRepr(value, rule.type)) };
    given[name] = value;
  }
  const model = given.model ?? rules.fields.model.default;
  if (!rules.browser_models.includes(model)) {
    return {
      field: "model",
      sentence: rules.browser_model_sentence.replace("{browser}", rules.browser_models.join(" and ")).replaceAll("{value}", model),
    };
  }
  const defaults = rules.model_defaults[model];
  const config = {};
  for (const [name, rule] of Object.entries(rules.fields)) {
    config[name] = name in given ? given[name] : name in defaults ? defaults[name] : rule.default;
  }
  for (const name of ["units", "filters", "dropout", "batch_norm"]) config[name] = defaults[name];
  return { config };
}
