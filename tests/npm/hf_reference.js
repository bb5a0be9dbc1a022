// The reference token ids of a text: @lenml/tokenizers (a JavaScript port of the Hugging Face
// tokenizers) loading a tokenizer.json and tokenizer_config.json, encode(text) with its default
// special tokens, written as little-endian uint32.
// Usage: node hf_reference.js MODEL_DIR TEXT OUT.u32
const fs = require("fs");
const { TokenizerLoader } = require("@lenml/tokenizers");
const [dir, textPath, outPath] = process.argv.slice(2);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(dir + "/tokenizer.json", "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(dir + "/tokenizer_config.json", "utf8")),
});
const text = fs.readFileSync(textPath, "utf8");
const t0 = process.hrtime.bigint();
const ids = tok.encode(text);
if (process.env.TQP_REF_TIME)
  console.error("encode_seconds " + Number(process.hrtime.bigint() - t0) / 1e9);
const out = Buffer.alloc(4 * ids.length);
ids.forEach((id, i) => out.writeUInt32LE(id, 4 * i));
fs.writeFileSync(outPath, out);
