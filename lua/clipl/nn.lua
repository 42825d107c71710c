--- Losses written from tensor ops, so they are differentiable through the tape: clip.nn.
--
--   local loss = clip.nn.cross_entropy(logits, labels, {label_smoothing = 0.1})
--   local loss = clip.nn.clip_loss(image_features, text_features, model.logit_scale)
--
-- Labels are 1-based class indices (a table of numbers or an integer tensor), as every index in
-- this API.
local tensor = require "clipl.tensor"

local is_tensor = tensor.is_tensor

local M = {}

local function want_tensor(x, what, level)
    if not is_tensor(x) then
        error(what .. ": expected a tensor, got " .. type(x), (level or 2) + 1)
    end
end

local function labels_of(labels, n, what)
    if type(labels) == "table" then
        labels = tensor.tensor(labels, "i64")
    elseif not is_tensor(labels) then
        error(what .. ": labels must be a tensor or a table of 1-based class indices, got " ..
            type(labels), 3)
    end
    if labels.ndim ~= 1 or labels:size(1) ~= n then
        error(string.format("%s: labels [%s] do not match %d rows of logits", what,
            table.concat(labels:size(), "x"), n), 3)
    end
    return labels
end

--- Cross-entropy of logits [N, C] against 1-based class labels [N] (PyTorch's F.cross_entropy):
-- opts.label_smoothing (eps in [0, 1]: the target is (1 - eps) one-hot + eps / C uniform) and
-- opts.reduction ("mean", default; "sum"; "none" -> [N]).
function M.cross_entropy(logits, labels, opts)
    want_tensor(logits, "cross_entropy")
    opts = opts or {}
    if logits.ndim ~= 2 then
        error("cross_entropy: logits must be [N, C], got [" .. table.concat(logits:size(), "x") ..
            "]", 2)
    end
    local n = logits:size(1)
    labels = labels_of(labels, n, "cross_entropy")
    local eps = opts.label_smoothing or 0
    if type(eps) ~= "number" or eps < 0 or eps > 1 then
        error("cross_entropy: label_smoothing must be in [0, 1], got " .. tostring(eps), 2)
    end
    local logp = logits:log_softmax(2)
    local nll = -logp:gather(2, labels:view(n, 1)):view(n)
    local per = nll
    if eps > 0 then
        local smooth = -logp:mean(2)
        per = nll * (1 - eps) + smooth * eps
    end
    local reduction = opts.reduction or "mean"
    if reduction == "mean" then
        return per:mean()
    elseif reduction == "sum" then
        return per:sum()
    elseif reduction == "none" then
        return per
    end
    error("cross_entropy: reduction must be 'mean', 'sum' or 'none', got " .. tostring(reduction),
        2)
end

--- x / max(||x||_2, eps) along the last dim (F.normalize).
function M.normalize(x, eps)
    want_tensor(x, "normalize")
    local n = x:norm(2, -1, {keepdim = true}):clamp(eps or 1e-12)
    return x / n
end

--- open_clip's ClipLoss (one process): both feature sets are L2-normalised, logits =
-- exp(logit_scale) * img @ txt^T, and the loss is the mean of the image->text and text->image
-- cross-entropies with the matching pairs on the diagonal. logit_scale is the learned log-scale
-- (a tensor of one element, or a number). Returns a 0-d tensor; opts.label_smoothing as in
-- cross_entropy; opts.return_logits also returns logits_per_image.
function M.clip_loss(image_features, text_features, logit_scale, opts)
    want_tensor(image_features, "clip_loss")
    want_tensor(text_features, "clip_loss")
    opts = opts or {}
    local n = image_features:size(1)
    if image_features.ndim ~= 2 or text_features.ndim ~= 2 or text_features:size(1) ~= n or
        text_features:size(2) ~= image_features:size(2) then
        error(string.format("clip_loss: image_features [%s] and text_features [%s] must be [N, E]",
            table.concat(image_features:size(), "x"), table.concat(text_features:size(), "x")), 2)
    end
    local img = M.normalize(image_features)
    local txt = M.normalize(text_features)
    local logits = img:matmul(txt:t())
    if is_tensor(logit_scale) then
        if logit_scale:numel() ~= 1 then
            error("clip_loss: logit_scale must have one element, got [" ..
                table.concat(logit_scale:size(), "x") .. "]", 2)
        end
        logits = logits * logit_scale:reshape({1}):exp()
    elseif type(logit_scale) == "number" then
        logits = logits * math.exp(logit_scale)
    else
        error("clip_loss: logit_scale must be a tensor or a number, got " .. type(logit_scale), 2)
    end
    local labels = tensor.arange(1, n + 1, "i64")
    local ce = {label_smoothing = opts.label_smoothing}
    local loss = (M.cross_entropy(logits, labels, ce) + M.cross_entropy(logits:t(), labels, ce))
        * 0.5
    if opts.return_logits then
        return loss, logits
    end
    return loss
end

--- Batch norm in training mode (F.batch_norm(training = True)) over dim 2 of x [N, C, ...]:
-- normalised with the batch's mean and biased variance, composed from tensor ops, so it is
-- differentiable through the tape (gradients for x, weight and bias). running_mean and
-- running_var (f32 [C], or nil) are updated in place with grad mode off: r = (1 - momentum) r +
-- momentum * batch value, with the unbiased variance, as PyTorch. momentum 0.1, eps 1e-5 by
-- default. (Frozen batch norm, as in CLIP's ResNet by default, is clip.batch_norm.)
function M.batch_norm_train(x, running_mean, running_var, weight, bias, momentum, eps)
    want_tensor(x, "batch_norm_train")
    momentum, eps = momentum or 0.1, eps or 1e-5
    local nd = x.ndim
    if nd < 2 then
        error("batch_norm_train: x must be [N, C, ...], got a " .. nd .. "-d tensor", 2)
    end
    local C = x:size(2)
    local perm, shape = {}, {}
    for i = 1, nd do
        if i ~= 2 then
            perm[#perm + 1] = i
        end
        shape[i] = i == 2 and C or 1
    end
    perm[#perm + 1] = 2
    local rows = x:permute(perm):reshape({-1, C}) -- [M, C]
    local m = rows:size(1)
    if m < 2 then
        error("batch_norm_train: expected more than one value per channel, got " .. m, 2)
    end
    local mean = rows:mean(1)
    local centred = rows - mean
    local var = centred:square():mean(1)
    local rstd = (var + eps):pow(-0.5)
    local y = (x - mean:view(shape)) * rstd:view(shape)
    if weight ~= nil then
        y = y * weight:view(shape)
    end
    if bias ~= nil then
        y = y + bias:view(shape)
    end
    if running_mean ~= nil or running_var ~= nil then
        local ag = require "clipl.autograd"
        ag.no_grad(function()
            if running_mean ~= nil then
                running_mean:mul_(1 - momentum):add_(mean:detach(), momentum)
            end
            if running_var ~= nil then
                running_var:mul_(1 - momentum):add_(var:detach(), momentum * m / (m - 1))
            end
        end)
    end
    return y
end

--- Mean squared error (reduction "mean", "sum" or "none").
function M.mse_loss(a, b, opts)
    want_tensor(a, "mse_loss")
    local d = (a - b):square()
    local reduction = opts and opts.reduction or "mean"
    if reduction == "mean" then
        return d:mean()
    elseif reduction == "sum" then
        return d:sum()
    end
    return d
end

return {nn = M}
