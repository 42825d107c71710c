-- convert a CLIP checkpoint (any supported format) to safetensors with OpenAI's names
--
--   clipl convert ViT-B-32.pt ViT-B-32.safetensors
--   clipl convert hf_model/ out.safetensors --dtype f16
local clip = require "clipl"
local cli = require "clipl.cli"

local args = cli.parser {
    name = "convert",
    description = "Converts a CLIP checkpoint (OpenAI .pt or TorchScript, torch.save state " ..
        "dict, " ..
        "safetensors with OpenAI or HuggingFace names, an open_clip or HuggingFace folder) to " ..
        "safetensors with OpenAI's state_dict names, loadable by clipl and by OpenAI's " ..
        "build_model(). The architecture is checked on the way (every tensor present, every " ..
        "shape right).",
    options = {
        {"--dtype", arg = "T", default = "f32", choices = {"f32", "f16", "bf16"},
            help = "storage dtype of the output (f16/bf16 halve the file)"},
        {"--config", arg = "JSON", help = "config with the heads for files without one " ..
            "(HuggingFace config.json, open_clip config)"},
    },
    positional = {
        {"input", help = "weights file or model folder"},
        {"output", help = "output .safetensors file"},
    },
}:parse(arg)

local ok, model = pcall(clip.load, args.input, {config = args.config})
if not ok then
    cli.die("convert", tostring(model))
end

local tensors = {}
local count = 0
for name, t in model:named_parameters(nil, true) do
    tensors[name] = args.dtype == "f32" and t or t:to(args.dtype)
    count = count + 1
end
-- OpenAI's load_state_dict (strict) expects BatchNorm's num_batches_tracked: add them as 0
for name in pairs(model:state_dict()) do
    local bn = name:match("^(.*)%.running_mean$")
    if bn then
        tensors[bn .. ".num_batches_tracked"] = clip.zeros({}, "i64")
        count = count + 1
    end
end

local ok2, err = pcall(clip.save_safetensors, args.output, tensors, {
    format = "pt",
    key_naming = "openai",
    producer = "clipl convert " .. clip.version,
    source = args.input,
    precision = args.dtype,
    hparams = require("cjson").encode(model:hparams()),
})
if not ok2 then
    cli.die("convert", tostring(err))
end
io.stderr:write(string.format("clipl convert: %s -> %s (%d tensors, %s, %s parameters)\n",
    args.input, args.output, count, args.dtype, model:info().parameters))
