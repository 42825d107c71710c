-- what a weights file holds: format, tensors, dtypes, inferred CLIP architecture, parameters
--
--   clipl info ViT-B-32.pt
--   clipl info model.safetensors --json
--   clipl info open_clip_folder/
local ffi = require "ffi"
local clip = require "clipl"
local cli = require "clipl.cli"

local args = cli.parser {
    name = "info",
    description = "What a weights file holds: format, tensor count, dtypes, the CLIP " ..
        "architecture inferred from the tensor shapes (as OpenAI's build_model does), its " ..
        "parameter count and work per image / per text",
    options = {
        {"--json", help = "print one JSON object"},
        {"--tensors", help = "also list every tensor (name, dtype, shape)"},
    },
    positional = {{"file", help = "weights file (.pt, .safetensors, TorchScript) or model folder"}},
}:parse(arg)

local C = clip.lib.C

local files = require "clipl.files"

local path = args.file
if files.is_dir(path) then
    for _, f in ipairs({"open_clip_model.safetensors", "open_clip_pytorch_model.bin",
        "model.safetensors", "pytorch_model.bin"}) do
        if files.exists(path .. "/" .. f) then
            path = path .. "/" .. f
            break
        end
    end
end

local d = C.clipl_load_weights(path)
if d == nil then
    cli.die("info", ffi.string(C.clipl_errmsg()))
end
d = ffi.gc(d, C.clipl_tdict_free)

local n = C.clipl_tdict_count(d)
local dtypes, elements, tensors = {}, 0, {}
for i = 0, n - 1 do
    local t = C.clipl_tdict_tensor(d, i)
    local dt = ffi.string(C.clipl_dtype_name(t.dt))
    dtypes[dt] = (dtypes[dt] or 0) + 1
    local numel = tonumber(C.clipl_tensor_numel(t))
    elements = elements + numel
    local shape = {}
    for k = 0, t.ndim - 1 do
        shape[#shape + 1] = tonumber(t.shape[k])
    end
    tensors[#tensors + 1] = {name = ffi.string(C.clipl_tdict_name(d, i)), dtype = dt,
        shape = shape}
end

local out = {file = args.file, format = ffi.string(C.clipl_tdict_format(d)), tensors = n,
    elements = elements, dtypes = dtypes}

local cfg = ffi.new("clipl_model_config")
if C.clipl_model_config_infer(d, path, cfg) == 0 then
    local vit = cfg.vision_kind == 0
    local fi, ft = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
    C.clipl_model_config_flops(cfg, fi, ft)
    out.architecture = clip.models.config_fields(cfg)
    out.architecture.vision = vit and "VisionTransformer" or "ModifiedResNet"
    out.parameters = tonumber(C.clipl_model_config_num_params(cfg))
    out.gflops_per_image = tonumber(fi[0]) / 1e9
    out.gflops_per_text = tonumber(ft[0]) / 1e9
else
    out.architecture_error = ffi.string(C.clipl_errmsg())
    C.clipl_errclear()
end
if args.tensors then
    out.tensor_list = tensors
end

if args.json then
    print(require("cjson").encode(out))
    return
end

local function fmt_int(v)
    local s = tostring(v)
    return s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

print("file        " .. out.file)
print("format      " .. out.format)
local dl = {}
for k, v in pairs(dtypes) do
    dl[#dl + 1] = k .. " x" .. v
end
table.sort(dl)
print(string.format("tensors     %d (%s elements; %s)", n, fmt_int(elements),
    table.concat(dl, ", ")))
if out.architecture then
    local a = out.architecture
    local layers = type(a.vision_layers) == "table" and
        "(" .. table.concat(a.vision_layers, ", ") .. ")" or tostring(a.vision_layers)
    if a.vision == "VisionTransformer" then
        print(string.format("vision      ViT: %d px, patch %d, width %d, %s layers, %d heads",
            a.image_resolution, a.vision_patch_size, a.vision_width, layers, a.vision_heads))
    else
        print(string.format("vision      ModifiedResNet: %d px, width %d, layers %s, attention " ..
            "pool %d heads", a.image_resolution, a.vision_width, layers, a.vision_heads))
    end
    print(string.format("text        context %d, vocab %d, width %d, %d layers, %d heads",
        a.context_length, a.vocab_size, a.transformer_width, a.transformer_layers,
        a.transformer_heads))
    print(string.format("embed_dim   %d", a.embed_dim))
    print(string.format("parameters  %s", fmt_int(out.parameters)))
    print(string.format("work        %.4g GFLOP per image, %.4g GFLOP per %d-token text",
        out.gflops_per_image, out.gflops_per_text, a.context_length))
else
    print("architecture: not a CLIP model (" .. out.architecture_error .. ")")
end
if args.tensors then
    for _, t in ipairs(tensors) do
        print(string.format("  %-60s %-4s [%s]", t.name, t.dtype, table.concat(t.shape, ", ")))
    end
end
