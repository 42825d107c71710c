-- Embed images into an index (L2-normalised CLIP embeddings in one safetensors file)
--
--   clipl embed --out photos.safetensors ~/Pictures
--   clipl embed --model ViT-B/32 --out idx.safetensors --dtype f16 a/ b/ c.jpg
--
-- A second run over the same folders adds only what is new. Ctrl-C stops after the current batch
-- and leaves a valid index of what was done.
local clip = require "clipl"
local cli = require "clipl.cli"
local progress = require "clipl.progress"
local files_of = require("clipl.files").images

local args = cli.parser {
    name = "embed",
    description = "Embed images into an index (L2-normalised CLIP embeddings, safetensors)",
    options = {
        {"-m", "--model", arg = "M", help = "model name, weights file or model folder " ..
            "(default: the bundled model)"},
        {"-o", "--out", arg = "INDEX", required = true,
            help = "the index file to create or extend"},
        {"--batch", arg = "N", type = "number", default = 32, help = "images per encoder call"},
        {"--dtype", arg = "T", default = "f32", choices = {"f32", "f16"},
            help = "stored embedding dtype"},
        {"--compute", arg = "T", default = "f32", choices = {"f32", "bf16"},
            help = "compute dtype of the model"},
        {"--save-every", arg = "N", type = "number", default = 20,
            help = "write the index every N batches (and at the end)"},
    },
    positional = {{"inputs", nargs = "+", help = "image files or folders"}},
}:parse(arg)

local model, why = require("clipl.files").load_model(args.model, "embed", {dtype = args.compute})
if not model then
    cli.die("embed", why)
end
local resolution = model:info().image_resolution
local ok_open, index = pcall(clip.index.open, args.out, {dtype = args.dtype, kind = "image"})
if not ok_open then
    cli.die("embed", index)
end

local todo = {}
for _, f in ipairs(files_of(args.inputs)) do
    if not index:has(f) then
        todo[#todo + 1] = f
    end
end
io.stderr:write(string.format("%d image(s) to embed, %d already in %s\n", #todo, index:size(),
    args.out))

local bad = {}
local bar = progress.new(#todo, {label = "embed", unit = "img"})
local batches = 0
local async = clip.preprocess_batch_start

local function chunk_at(b0)
    local chunk = {}
    for i = b0, math.min(#todo, b0 + args.batch - 1) do
        chunk[#chunk + 1] = todo[i]
    end
    return chunk
end

local pending
local ok, err = pcall(function()
    local b0 = 1
    -- decode the next batch on worker threads while the encoder runs this one (when available)
    pending = async and #todo > 0 and async(chunk_at(1), resolution, {skip_bad = true})
    while b0 <= #todo do
        local chunk = chunk_at(b0)
        local images, failed
        if pending then
            images, failed = pending:wait()
            local next0 = b0 + args.batch
            pending = next0 <= #todo and
                async(chunk_at(next0), resolution, {skip_bad = true}) or nil
        else
            images, failed = clip.preprocess_batch(chunk, resolution, {skip_bad = true})
        end
        local skip = {}
        for _, f in ipairs(failed) do
            skip[f.index] = true
            bad[#bad + 1] = f
        end
        local emb = model:encode_image(images)
        local paths, rows = {}, {}
        for i, p in ipairs(chunk) do
            if not skip[i] then
                paths[#paths + 1] = p
                rows[#rows + 1] = i
            end
        end
        if #rows > 0 then
            if #rows < #chunk then
                local idx = clip.tensor(rows, "i64")
                emb = emb:index_select(1, idx)
            end
            index:add(paths, emb)
        end
        batches = batches + 1
        if batches % args.save_every == 0 then
            index:save()
        end
        bar:update(#chunk)
        b0 = b0 + args.batch
    end
end)
bar:finish()
pending = nil
-- after Ctrl-C the interrupt request is still set: clear it so that the save below runs
clip.lib.C.clipl_interrupt(0)
index:save()
io.stderr:write(string.format("%s: %d embeddings\n", args.out, index:size()))
if #bad > 0 then
    io.stderr:write(#bad, " file(s) skipped:\n")
    for _, f in ipairs(bad) do
        io.stderr:write("  ", f.path, ": ", f.message, "\n")
    end
end
if not ok then
    if tostring(err):find("interrupted", 1, true) then
        io.stderr:write("interrupted: the index holds what was done; run again to continue\n")
        os.exit(130)
    end
    error(err, 0)
end
