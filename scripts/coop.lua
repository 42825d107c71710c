-- CoOp: prompt learning on a frozen CLIP model (Zhou et al., "Learning to Prompt for
-- Vision-Language Models")
--
--   clipl coop --train shapes/train.tsv --test shapes/val.tsv --label-column shape --shots 16
--
-- The prompt of class c is [SOT] v1 ... vM <class name>. [EOT], where the context vectors v are
-- learned (shared by all classes) and everything else is frozen: the gradient flows through the
-- text tower only, to the M x width context. Prints the zero-shot accuracy with --template and the
-- accuracy with the learned context; --out saves the context as safetensors.
local clip = require "clipl"
local cli = require "clipl.cli"
local files = require "clipl.files"
local T = clip.train

local args = cli.parser {
    name = "coop",
    description = "Learn prompt context vectors (CoOp) on a frozen CLIP model",
    options = files.train_test_options {
        {"--shots", arg = "K", type = "number", default = 16, help = "training images per class"},
        {"--n-ctx", arg = "M", type = "number", default = 4, help = "context vectors"},
        {"--epochs", arg = "N", type = "number", default = 50},
        {"--batch-size", arg = "N", type = "number", default = 32},
        {"--lr", arg = "LR", type = "number", default = 2e-3},
        {"--template", arg = "T", default = "a photo of a {}.",
            help = "the hand-written prompt the baseline uses"},
        {"--seed", arg = "N", type = "number", default = 0},
        {"--out", arg = "FILE", help = "save the learned context (safetensors)"},
        {"--threads", arg = "N", type = "number"},
    },
}:parse(arg)

local function die(msg)
    cli.die("coop", msg)
end
local model = files.script_model(args, "coop")
T.train_params(model, nil, false) -- frozen: only the context learns
local train, test = files.train_test(args.train, args.test, args.label_column)
if not train then
    die(test)
end
local classes = train.classes

-- K shots per class, chosen by a seeded permutation
local per, items = {}, {}
for _, i in ipairs(T.permutation(#train.items, args.seed)) do
    local it = train.items[i]
    per[it.label] = (per[it.label] or 0) + 1
    if per[it.label] <= args.shots then
        items[#items + 1] = it
    end
end
train = {items = items, classes = classes, source = train.source}

local xtr, ytr = T.features(model, train, {normalize = true})
local xte, yte = T.features(model, test, {normalize = true})
local scale = math.exp(model.logit_scale:item())
local tokenize = function(texts)
    return clip.zeroshot.tokenize(model, texts, {truncate = true})
end

-- baseline: the hand-written template
local function accuracy_of(text_features, x, y)
    return T.accuracy(x:matmul(clip.nn.normalize(text_features):t()), y)
end
local prompts = {}
for i, c in ipairs(classes) do
    prompts[i] = args.template:gsub("{}", function() return c end)
end
local zs = clip.no_grad(function()
    return accuracy_of(model:encode_text(tokenize(prompts)), xte, yte)
end)

-- the learnable prompts: [SOT] ctx x M, then "<class>." and EOT
local m = args.n_ctx
local info = model:info()
local names = {}
for i, c in ipairs(classes) do
    names[i] = c .. "."
end
local tok = tokenize(names)
local tmax = 1
for _, e in ipairs(tok:argmax(2):totable()) do
    tmax = math.max(tmax, e)
end
if tmax + m > info.context_length then
    die(string.format("--n-ctx %d: the prompts would have %d tokens, more than the model's %d",
        m, tmax + m, info.context_length))
end
tok = tok:narrow(2, 1, tmax)
local k = #classes
local ptok = clip.cat({tok:narrow(2, 1, 1), clip.zeros({k, m}, tok:dtype()),
    tok:narrow(2, 2, tmax - 1)}, 2)
local emb = clip.no_grad(function()
    return clip.embedding(tok:to("i64") + 1, model:parameter("token_embedding.weight"))
end)
local w = info.transformer_width
local ctx = clip.randn({m, w}, {seed = args.seed, std = 0.02}):requires_grad(true)
local function text_features()
    local x = clip.cat({emb:narrow(2, 1, 1), ctx:unsqueeze(1):expand(k, m, w),
        emb:narrow(2, 2, tmax - 1)}, 2)
    return T.forward_text_embeddings(model, x, ptok)
end

local opt = clip.optim.SGD({ctx = ctx}, {lr = args.lr, momentum = 0.9})
local n = #ytr
local steps = math.max(1, math.ceil(n / args.batch_size)) * args.epochs
local sched = clip.optim.cosine(opt, {warmup = 1, steps = steps})
local progress = require "clipl.progress"
local bar = progress.new(steps, {label = "coop", unit = "step"})
local step = 0
for e = 1, args.epochs do
    local perm = T.permutation(n, args.seed * 7919 + e)
    for b0 = 1, n, args.batch_size do
        local idx, lab = {}, {}
        for i = b0, math.min(n, b0 + args.batch_size - 1) do
            idx[#idx + 1] = perm[i]
            lab[#lab + 1] = ytr[perm[i]]
        end
        local logits = xtr:index_select(1, idx):matmul(clip.nn.normalize(text_features()):t()) *
            scale
        local loss = clip.nn.cross_entropy(logits, lab)
        opt:zero_grad()
        loss:backward()
        opt:step()
        sched:step()
        step = step + 1
        bar:set_postfix(string.format("loss %.4f", loss:item()))
        bar:update(1)
    end
end
bar:finish()
local learned = clip.no_grad(function()
    return accuracy_of(text_features(), xte, yte)
end)
print(string.format("zero-shot with '%s': %.2f%%", args.template, 100 * zs))
print(string.format("CoOp (%d context vectors, %d shots per class): %.2f%% (%d test images, " ..
    "%d classes)", m, args.shots, 100 * learned, #yte, k))
if args.out then
    clip.save_safetensors(args.out, {ctx = ctx:detach()})
end
