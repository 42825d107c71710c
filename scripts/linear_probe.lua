-- Linear probe: logistic regression on frozen CLIP image features (OpenAI's README recipe)
--
--   clipl linear_probe --train shapes/train.tsv --test shapes/val.tsv --label-column shape
--   clipl linear_probe --model ViT-B/32 --train photos/ --test photos_test/
--
-- Features come from model:encode_image (frozen, no grad). A part of the training set (--holdout,
-- default 20%) picks the regularisation strength C from a sweep (--C list, as OpenAI's README tunes
-- scikit-learn's LogisticRegression(C)); the probe is then refit on all of the training set with
-- the best C and its accuracy on --test is printed.
local clip = require "clipl"
local cli = require "clipl.cli"
local files = require "clipl.files"
local T = clip.train

local args = cli.parser {
    name = "linear_probe",
    description = "Logistic regression on frozen CLIP image features, with a sweep of C",
    options = files.train_test_options {
        {"--C", arg = "C1,C2,...", default = "0.01,0.1,0.316,1,3.16,10,100",
            help = "regularisation strengths to try"},
        {"--holdout", arg = "F", type = "number", default = 0.2,
            help = "share of the training set that validates C"},
        {"--iters", arg = "N", type = "number", default = 300, help = "optimizer steps per fit"},
        {"--seed", arg = "N", type = "number", default = 0},
        {"--threads", arg = "N", type = "number"},
    },
}:parse(arg)

local function die(msg)
    cli.die("linear_probe", msg)
end
local model = files.script_model(args, "linear_probe")
local train, test = files.train_test(args.train, args.test, args.label_column)
if not train then
    die(test)
end
local k = #train.classes

local progress = require "clipl.progress"
local function feats(ds, what)
    local bar = progress.new(#ds.items, {label = what, unit = "img"})
    local x, y = T.features(model, ds, {progress = function(d) bar:set(d) end})
    bar:finish()
    return x, y
end
local xtr, ytr = feats(train, "train features")
local xte, yte = feats(test, "test features")

-- split the training features for the sweep
local perm = T.permutation(#ytr, args.seed)
local nval = math.max(1, math.floor(#ytr * args.holdout))
local fit_idx, val_idx, yfit, yval = {}, {}, {}, {}
for i, j in ipairs(perm) do
    if i <= nval then
        val_idx[#val_idx + 1], yval[#yval + 1] = j, ytr[j]
    else
        fit_idx[#fit_idx + 1], yfit[#yfit + 1] = j, ytr[j]
    end
end
local xfit, xval = xtr:index_select(1, fit_idx), xtr:index_select(1, val_idx)

local best_c, best_acc = nil, -1
for cs in args.C:gmatch("[^,]+") do
    local c = tonumber(cs)
    if not c or c <= 0 then
        die("--C: '" .. cs .. "' is not a positive number")
    end
    local p = T.logistic_regression(xfit, yfit, k, c, {iters = args.iters})
    local acc = T.accuracy(xval:matmul(p.weight) + p.bias, yval)
    print(string.format("C = %-8g validation accuracy %.2f%%", c, 100 * acc))
    if acc > best_acc then
        best_c, best_acc = c, acc
    end
end
local p = T.logistic_regression(xtr, ytr, k, best_c, {iters = args.iters})
local acc = T.accuracy(xte:matmul(p.weight) + p.bias, yte)
print(string.format("best C = %g: test accuracy %.2f%% (%d images, %d classes)", best_c, 100 * acc,
    #yte, k))
