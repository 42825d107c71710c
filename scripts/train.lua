-- Contrastive training or fine-tuning of a CLIP model
--
--   clipl train --train data/train.tsv --val data/val.tsv --val-column label --model ViT-B/32 \
--       --out runs/ft --epochs 2 --batch-size 64 --lr 1e-5
--   clipl train --train photos/ --val photos_val/ --templates "a photo of a {}." ...
--   clipl train --train shapes/train.tsv --config tiny.json --vocab vocab.txt.gz --out runs/tiny
--
-- --train is a CSV/TSV with an image path and a caption column, or a folder with one folder per
-- class (captions from --templates). --val (comma-separated list) is evaluated zero-shot after
-- each epoch: its classes are a label column (--val-column, "a+b" joins two columns) or its class
-- folders, its prompts --templates. The run writes OUT/checkpoint.json (+ tensors) after each
-- epoch (and every --save-every steps) and resumes from it; OUT/loss.png; OUT/log.jsonl; at the
-- end OUT/model.safetensors (OpenAI key names, loadable by clip.load) and OUT/config.json.
local clip = require "clipl"
local cli = require "clipl.cli"
local cjson = require "cjson"
local progress = require "clipl.progress"
local T = clip.train

local args = cli.parser {
    name = "train",
    description = "Contrastive training or fine-tuning of a CLIP model (open_clip's recipe)",
    options = {
        {"--train", arg = "FILE|DIR", required = true,
            help = "CSV/TSV of image path + caption, or a folder per class"},
        {"--val", arg = "FILE|DIR[,...]", help = "zero-shot validation split(s), after each epoch"},
        {"--val-column", arg = "COL", help = "class column of a CSV/TSV val split " ..
            "(a+b joins columns)"},
        {"--templates", arg = "T|FILE", default = "a photo of a {}.",
            help = "caption templates for class folders and val prompts: '|'-separated, or a " ..
                "file with one per line"},
        {"--caption-templates", arg = "T|FILE", help = "wrap each training caption in one of " ..
            "these ('|'-separated or a file; {} = the caption), e.g. '{}|a photo of {}.'"},
        {"-m", "--model", arg = "M", help = "model to fine-tune (name, file or folder)"},
        {"--config", arg = "JSON", help = "train from scratch: architecture (open_clip JSON)"},
        {"--vocab", arg = "FILE", help = "BPE vocabulary (default: the model's)"},
        {"--out", arg = "DIR", required = true, help = "output folder (checkpoints, curve, model)"},
        {"--epochs", arg = "N", type = "number", default = 1},
        {"--batch-size", arg = "N", type = "number", default = 32},
        {"--lr", arg = "LR", type = "number", default = 5e-4},
        {"--wd", arg = "WD", type = "number", default = 0.2, help = "AdamW weight decay"},
        {"--group", arg = "K", type = "number", default = 1, help = "shuffle --train in runs " ..
            "of K rows kept together in a batch (hard negatives of make-shapes --group K)"},
        {"--warmup", arg = "STEPS", type = "number", default = 100},
        {"--grad-clip", arg = "NORM", type = "number", help = "clip the global gradient norm"},
        {"--dtype", arg = "T", default = "f32", choices = {"f32", "bf16"},
            help = "compute dtype of the matmuls (bf16: f32 master weights)"},
        {"--threads", arg = "N", type = "number", help = "threads (default: all cores)"},
        {"--seed", arg = "N", type = "number", default = 0, help = "data order and init seed"},
        {"--save-every", arg = "STEPS", type = "number", help = "also checkpoint every N steps"},
        {"--lock-image", help = "freeze the image tower (LiT)"},
        {"--max-minutes", arg = "M", type = "number", help = "stop (with a checkpoint) after M " ..
            "minutes of training"},
    },
}:parse(arg)

local function die(msg)
    cli.die("train", msg)
end

if args.threads then
    clip.set_num_threads(args.threads)
end
if not args.model and not args.config then
    die("give --model (fine-tune) or --config (train from scratch)")
end
os.execute("mkdir -p '" .. args.out:gsub("'", "'\\''") .. "'")

local function templates_of(spec)
    local f = io.open(spec, "r")
    local list = {}
    if f then
        for line in f:lines() do
            if line:find("%S") then
                list[#list + 1] = line
            end
        end
        f:close()
    else
        for t in spec:gmatch("[^|]+") do
            list[#list + 1] = t
        end
    end
    return list
end
local templates = templates_of(args.templates)

-- ---- model and tokenizer ----------------------------------------------------------------------

local tokenizer, model
if args.vocab then
    local ok, t = pcall(clip.tokenizer, args.vocab)
    if not ok then
        die(t)
    end
    tokenizer = t
    -- beside the weights under OpenAI's file name, so clip.load finds the model's tokenizer
    local src = io.open(args.vocab, "rb")
    local bytes = src:read("*a")
    src:close()
    T.write_atomic(args.out .. "/bpe_simple_vocab_16e6.txt.gz", bytes)
end
local config_path = args.out .. "/config.json"
if args.config then
    local f = io.open(args.config, "rb")
    if not f then
        die("cannot read --config " .. args.config)
    end
    local ok, cfg = pcall(cjson.decode, f:read("*a"))
    f:close()
    if not ok then
        die(args.config .. ": " .. tostring(cfg))
    end
    if tokenizer then
        cfg.text_cfg.vocab_size = tokenizer.vocab_size -- the table fits the learned vocabulary
    end
    T.write_atomic(config_path, T.json_encode(cfg))
    local ok2, m = pcall(clip.build_model, config_path, {seed = args.seed})
    if not ok2 then
        die(m)
    end
    model = m
else
    local ok, m = pcall(clip.load, args.model)
    if not ok then
        die(m)
    end
    model = m
end
if not tokenizer then
    local ok, t = pcall(clip.zeroshot.tokenizer_of, model)
    if not ok then
        die(t)
    end
    tokenizer = t
end
local info = model:info()
local function tokenize(texts)
    return tokenizer:tokenize(texts, {context_length = info.context_length, truncate = true})
end

T.train_params(model)
model.train_dtype = args.dtype
if args.lock_image then
    T.train_params(model, "^visual%.", false)
end

-- ---- data -------------------------------------------------------------------------------------

local ok_ds, ds = pcall(T.dataset, args.train, {templates = templates})
if not ok_ds then
    die(ds)
end
local ok_ld, loader = pcall(T.loader, ds, {batch_size = args.batch_size,
    resolution = info.image_resolution, seed = args.seed, tokenize = tokenize, group = args.group,
    caption_templates = args.caption_templates and templates_of(args.caption_templates)})
if not ok_ld then
    die(loader)
end
local vals = {}
for spec in (args.val or ""):gmatch("[^,]+") do
    local ok, v = pcall(T.dataset, spec, {label_column = args.val_column, templates = templates})
    if not ok then
        die(v)
    end
    if not v.classes then
        die("--val " .. spec .. ": give --val-column (the class of each row)")
    end
    vals[#vals + 1] = v
end

local steps = loader.batches * args.epochs
local opt = clip.optim.AdamW(model:named_parameters(), {lr = args.lr, betas = {0.9, 0.98},
    eps = 1e-6, weight_decay = args.wd})
local sched = clip.optim.cosine(opt, {warmup = args.warmup, steps = steps})

local ck = args.out .. "/checkpoint.json"
local state = {model = model, optimizer = opt, scheduler = sched}
local ok_ck, meta = pcall(T.load_checkpoint, ck, state)
if not ok_ck then
    die(meta)
end
local step = meta and meta.step or 0
local history = meta and meta.extra or {losses = {}, evals = {}, seconds = 0}
if meta then
    io.stderr:write(string.format("clipl train: resumed from %s at step %d of %d\n", ck, step,
        steps))
end

-- ---- evaluation -------------------------------------------------------------------------------

local function evaluate(v)
    T.ensure_prepared(model)
    return clip.no_grad(function()
        local clf = clip.zeroshot.classifier(model, v.classes, templates,
            {cache = false, tokenize = tokenize})
        local vl = T.loader(v, {batch_size = 256, resolution = info.image_resolution,
            shuffle = false, drop_last = false})
        local right, total = 0, 0
        for _, b in vl:iter(1) do
            local pred = clf:logits(b.images):argmax(2):totable()
            for i, l in ipairs(b.labels) do
                total = total + 1
                if pred[i] == l then
                    right = right + 1
                end
            end
        end
        return right / math.max(total, 1), total
    end)
end

local function save(extra_note)
    history.note = extra_note
    T.save_checkpoint(ck, {model = model, optimizer = opt, scheduler = sched, step = step,
        extra = history})
end

-- ---- the loop ---------------------------------------------------------------------------------

local t_start = progress.now() - (history.seconds or 0)
local stopped = false
local logf = io.open(args.out .. "/log.jsonl", "a")
while step < steps and not stopped do
    local epoch = math.floor(step / loader.batches) + 1
    local first = step % loader.batches + 1
    local bar = progress.new(loader.batches, {label = string.format("epoch %d/%d", epoch,
        args.epochs), unit = "batch"})
    bar:set(first - 1)
    local t0, seen = progress.now(), 0
    for _, batch in loader:iter(epoch, first) do
        local loss = clip.nn.clip_loss(T.forward_image(model, batch.images),
            T.forward_text(model, batch.tokens), model.logit_scale)
        opt:zero_grad()
        loss:backward()
        if args.grad_clip then
            clip.optim.clip_grad_norm(opt, args.grad_clip)
        end
        local lr = opt:get_lr()
        opt:step()
        sched:step()
        step = step + 1
        local l = loss:item()
        history.losses[#history.losses + 1] = l
        seen = seen + batch.images:size(1)
        local ips = seen / math.max(progress.now() - t0, 1e-9)
        bar:set_postfix(string.format("loss %.4f lr %.2e %.1f img/s", l, lr, ips))
        bar:update(1)
        if args.save_every and step % args.save_every == 0 then
            history.seconds = progress.now() - t_start
            save()
        end
        if args.max_minutes and progress.now() - t_start > args.max_minutes * 60 then
            stopped = true
            break
        end
    end
    bar:finish()
    history.seconds = progress.now() - t_start
    local ev = {step = step, epoch = epoch, loss = history.losses[#history.losses]}
    for i, v in ipairs(vals) do
        local acc, n = evaluate(v)
        ev["acc_" .. i] = acc
        io.stderr:write(string.format(
            "  zero-shot accuracy on %s: %.2f%% (%d images, %d classes)\n",
            v.source, 100 * acc, n, #v.classes))
    end
    history.evals[#history.evals + 1] = ev
    if logf then
        logf:write(cjson.encode(ev), "\n")
        logf:flush()
    end
    T.plot_losses(args.out .. "/loss.png", history.losses)
    save()
end
if logf then
    logf:close()
end

do
    local tensors = {}
    for name, p in model:named_parameters(nil, true) do
        tensors[name] = p
    end
    local arch = {
        embed_dim = info.embed_dim, image_resolution = info.image_resolution,
        vision_layers = info.vision_layers, vision_width = info.vision_width,
        vision_patch_size = info.vision_patch_size, vision_heads = info.vision_heads,
        context_length = info.context_length, vocab_size = info.vocab_size,
        transformer_width = info.transformer_width, transformer_heads = info.transformer_heads,
        transformer_layers = info.transformer_layers, activation = info.activation,
    }
    clip.save_safetensors(args.out .. "/model.safetensors", tensors, {format = "pt",
        key_naming = "openai", producer = "clipl train " .. clip.version,
        hparams = cjson.encode(arch), steps = tostring(step)})
    io.stderr:write(string.format(
        "clipl train: %d of %d steps in %.0f s; wrote %s/model.safetensors\n",
        step, steps, history.seconds, args.out))
    if step < steps then
        io.stderr:write("clipl train: stopped by --max-minutes; run the same command again to " ..
            "resume\n")
    end
end
