--- Optimizers, schedules and gradient clipping: clip.optim.
--
--   local opt = clip.optim.AdamW(model:parameters(), {lr = 5e-4, betas = {0.9, 0.98}, eps = 1e-6,
--                                                     weight_decay = 0.2})
--   local sched = clip.optim.cosine(opt, {warmup = 100, steps = 10000})
--   opt:zero_grad(); loss:backward(); clip.optim.clip_grad_norm(opt, 1.0); opt:step(); sched:step()
--
-- Parameters can be given as a list of tensors, a table name -> tensor (e.g. a model's parameters,
-- by checkpoint key), an iterator of (name, tensor) such as model:named_parameters(), a list of
-- {name, tensor} pairs, or a list of parameter groups
-- {params = <any of those>, lr = ..., weight_decay = ...} whose fields override the defaults.
-- A step is one C call for all parameters of the optimizer (clipl_adamw_step / clipl_sgd_step over
-- arrays of tensors: parameters stay separate tensors, nothing is flattened); parameters without a
-- gradient or not requiring grad (frozen) are skipped. After each step a parameter named
-- logit_scale is clamped to [0, ln 100] (open_clip). Read-only weights (file mappings) are copied
-- (clipl_tensor_make_writable) before their first update.
local ffi = require "ffi"
local bit = require "bit"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check = lib.C, lib.check
local is_tensor = tensor.is_tensor

local M = {}

local LN100 = math.log(100)
local READONLY = 1
local dbl = ffi.new("double[1]")

-- ---- parameter lists ---------------------------------------------------------------------------

-- A list of {name =, tensor =} from any accepted form (names sorted for a map, so the order is
-- reproducible).
local function named_list(params, what)
    local out = {}
    if is_tensor(params) then
        return {{name = "1", tensor = params}}
    end
    if type(params) == "function" then -- an iterator of (name, tensor): model:named_parameters()
        for name, t in params do
            if not is_tensor(t) then
                error(what .. ": parameter '" .. tostring(name) .. "' is not a tensor", 4)
            end
            out[#out + 1] = {name = tostring(name), tensor = t}
        end
        return out
    end
    if type(params) ~= "table" then
        error(what .. ": expected parameters (a table of tensors), got " .. type(params), 4)
    end
    if #params > 0 then
        -- model:parameters() labels its array with the checkpoint keys (params.names)
        local labels = type(params.names) == "table" and params.names or {}
        for i, p in ipairs(params) do
            if is_tensor(p) then
                out[#out + 1] = {name = tostring(labels[i] or i), tensor = p}
            elseif type(p) == "table" and is_tensor(p[2]) then
                out[#out + 1] = {name = tostring(p[1]), tensor = p[2]}
            elseif type(p) == "table" and is_tensor(p.tensor or p.param) then
                out[#out + 1] = {name = tostring(p.name or i), tensor = p.tensor or p.param}
            else
                error(what .. ": parameter " .. i .. " is not a tensor", 4)
            end
        end
        return out
    end
    local names = {}
    for k, v in pairs(params) do
        if not is_tensor(v) then
            error(what .. ": parameter '" .. tostring(k) .. "' is not a tensor", 4)
        end
        names[#names + 1] = k
    end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do
        out[#out + 1] = {name = tostring(k), tensor = params[k]}
    end
    return out
end

local function is_group_list(params)
    return type(params) == "table" and type(params[1]) == "table" and not is_tensor(params[1]) and
        params[1].params ~= nil
end

-- Builds self.groups: each {params = {{name, tensor}...}, lr =, weight_decay =, ...}.
local function build_groups(self, params, defaults, what)
    self.defaults = defaults
    self.groups = {}
    local list = is_group_list(params) and params or {{params = params}}
    for gi, g in ipairs(list) do
        local group = {}
        for k, v in pairs(defaults) do
            group[k] = v
        end
        for k, v in pairs(g) do
            if k ~= "params" then
                group[k] = v
            end
        end
        group.params = named_list(g.params, what)
        group.index = gi
        self.groups[gi] = group
    end
end

-- Decoupled weight decay of one parameter: open_clip excludes gains, biases, the class embedding
-- and logit_scale, i.e. every tensor of fewer than 2 dims; opts.no_decay(name, t) overrides it.
local function decay_of(group, p)
    local wd = group.weight_decay or 0
    if wd == 0 then
        return 0
    end
    local filter = group.no_decay
    if filter == nil then
        return p.tensor.ndim < 2 and 0 or wd
    end
    if filter == false then
        return wd
    end
    return filter(p.name, p.tensor) and 0 or wd
end

local function is_logit_scale(name)
    return name == "logit_scale" or name:sub(-12) == ".logit_scale"
end

-- Parameters that take part in a step: they require grad and have one.
local function active(self)
    local list = {}
    for _, g in ipairs(self.groups) do
        for _, p in ipairs(g.params) do
            local t = p.tensor
            if C.clipl_tensor_requires_grad(t) == 1 then
                local gr = t.grad
                if gr ~= nil then
                    list[#list + 1] = {p = p, group = g, grad = gr}
                end
            end
        end
    end
    return list
end

local function prepare_param(t, what)
    if bit.band(t.flags, READONLY) ~= 0 then
        check(C.clipl_tensor_make_writable(t), 4)
    end
    if t.dt ~= 0 or C.clipl_tensor_is_contiguous(t) ~= 1 then
        error(what .. ": parameters must be contiguous f32 tensors (master weights)", 4)
    end
end

local function clamp_logit_scale(list)
    for _, a in ipairs(list) do
        if is_logit_scale(a.p.name) then
            local t = a.p.tensor
            local prev = C.clipl_set_grad_enabled(0)
            local rc = 0
            for i = 0, tonumber(C.clipl_tensor_numel(t)) - 1 do
                if rc == 0 then
                    rc = C.clipl_tensor_get_flat(t, i, dbl)
                end
                local v = dbl[0]
                if rc == 0 and not (v >= 0 and v <= LN100) then
                    rc = C.clipl_tensor_set_flat(t, i, v < 0 and 0 or LN100)
                end
            end
            C.clipl_set_grad_enabled(prev)
            check(rc, 3)
        end
    end
end

-- ---- shared optimizer methods -------------------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer

--- Clears the gradient of every parameter (set to nil, PyTorch's set_to_none).
function Optimizer:zero_grad()
    for _, g in ipairs(self.groups) do
        for _, p in ipairs(g.params) do
            C.clipl_tensor_set_grad(p.tensor, nil)
        end
    end
end

--- Every parameter tensor (in group order).
function Optimizer:parameters()
    local out = {}
    for _, g in ipairs(self.groups) do
        for _, p in ipairs(g.params) do
            out[#out + 1] = p.tensor
        end
    end
    return out
end

--- Sets the learning rate of every group (or of group gi).
function Optimizer:set_lr(lr, gi)
    for i, g in ipairs(self.groups) do
        if gi == nil or gi == i then
            g.lr = lr
        end
    end
end

function Optimizer:get_lr(gi)
    return self.groups[gi or 1].lr
end

local function state_key(g, p)
    return g.index .. ":" .. p.name
end

--- The state for a checkpoint: {step =, groups = {{lr =, weight_decay =, ...}}, tensors =
-- {["<group>:<name>.<slot>"] = tensor}, steps = {["<group>:<name>"] = n}}. Tensors are the live
-- state (copy them to keep a snapshot).
function Optimizer:state_dict()
    local sd = {step = self.step_count, groups = {}, tensors = {}, steps = {}}
    for gi, g in ipairs(self.groups) do
        local hyper = {}
        for k, v in pairs(g) do
            if k ~= "params" and k ~= "index" and type(v) ~= "function" then
                hyper[k] = v
            end
        end
        sd.groups[gi] = hyper
        for _, p in ipairs(g.params) do
            local key = state_key(g, p)
            local st = self.state[key]
            if st then
                for slot, t in pairs(st.tensors) do
                    sd.tensors[key .. "." .. slot] = t
                end
                sd.steps[key] = st.step
            end
        end
    end
    return sd
end

--- Restores a state_dict (tensors are copied into fresh state; shapes must match).
function Optimizer:load_state_dict(sd)
    self.step_count = sd.step or 0
    for gi, hyper in ipairs(sd.groups or {}) do
        local g = self.groups[gi]
        if g == nil then
            error("load_state_dict: the state has more parameter groups than the optimizer", 2)
        end
        for k, v in pairs(hyper) do
            g[k] = v
        end
    end
    self.state = {}
    for _, g in ipairs(self.groups) do
        for _, p in ipairs(g.params) do
            local key = state_key(g, p)
            if sd.steps and sd.steps[key] then
                local st = {step = sd.steps[key], tensors = {}}
                for _, slot in ipairs(self.slots) do
                    local t = sd.tensors[key .. "." .. slot]
                    if t == nil then
                        error("load_state_dict: missing state '" .. key .. "." .. slot .. "'", 2)
                    end
                    if t:numel() ~= p.tensor:numel() then
                        error("load_state_dict: state '" .. key .. "." .. slot .. "' has " ..
                            t:numel() .. " elements, the parameter " .. p.tensor:numel(), 2)
                    end
                    st.tensors[slot] = t:to("f32"):reshape(p.tensor:size())
                end
                self.state[key] = st
            end
        end
    end
end

local function state_of(self, a)
    local key = state_key(a.group, a.p)
    local st = self.state[key]
    if not st then
        st = {step = 0, tensors = {}}
        for _, slot in ipairs(self.slots) do
            st.tensors[slot] = tensor.zeros(a.p.tensor:size(), "f32")
        end
        self.state[key] = st
    end
    return st
end

-- ---- AdamW --------------------------------------------------------------------------------------

local AdamW = setmetatable({}, {__index = Optimizer})
AdamW.__index = AdamW

--- clip.optim.AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2,
-- no_decay = fn(name, t) -> true to exclude | false to decay everything}): torch.optim.AdamW.
function M.AdamW(params, opts)
    opts = opts or {}
    local defaults = {lr = opts.lr or 1e-3, weight_decay = opts.weight_decay or 1e-2,
        no_decay = opts.no_decay}
    local self = setmetatable({kind = "AdamW", state = {}, step_count = 0,
        slots = {"exp_avg", "exp_avg_sq"}}, AdamW)
    local betas = opts.betas or {0.9, 0.999}
    self.beta1, self.beta2, self.eps = betas[1], betas[2], opts.eps or 1e-8
    build_groups(self, params, defaults, "AdamW")
    return self
end

--- One update of every parameter that has a gradient (one C call).
function AdamW:step()
    local list = active(self)
    self.step_count = self.step_count + 1
    local n = #list
    if n == 0 then
        return
    end
    local P = ffi.new("clipl_tensor *[?]", n)
    local G = ffi.new("clipl_tensor *[?]", n)
    local Ms = ffi.new("clipl_tensor *[?]", n)
    local Vs = ffi.new("clipl_tensor *[?]", n)
    local lr = ffi.new("double[?]", n)
    local wd = ffi.new("double[?]", n)
    local steps = ffi.new("int64_t[?]", n)
    for i, a in ipairs(list) do
        prepare_param(a.p.tensor, "AdamW")
        local st = state_of(self, a)
        st.step = st.step + 1
        P[i - 1], G[i - 1] = a.p.tensor, a.grad
        Ms[i - 1], Vs[i - 1] = st.tensors.exp_avg, st.tensors.exp_avg_sq
        lr[i - 1] = a.group.lr
        wd[i - 1] = decay_of(a.group, a.p)
        steps[i - 1] = st.step
    end
    check(C.clipl_adamw_step(n, P, G, Ms, Vs, lr, wd, steps, self.beta1, self.beta2, self.eps))
    clamp_logit_scale(list)
end

-- ---- SGD ----------------------------------------------------------------------------------------

local SGD = setmetatable({}, {__index = Optimizer})
SGD.__index = SGD

--- clip.optim.SGD(params, {lr =, momentum = 0, dampening = 0, weight_decay = 0, nesterov =
-- false}): torch.optim.SGD (weight decay added to the gradient, as PyTorch; every parameter).
function M.SGD(params, opts)
    opts = opts or {}
    if not opts.lr then
        error("SGD: opts.lr is required", 2)
    end
    local defaults = {lr = opts.lr, weight_decay = opts.weight_decay or 0, no_decay = false}
    local self = setmetatable({kind = "SGD", state = {}, step_count = 0,
        momentum = opts.momentum or 0, dampening = opts.dampening or 0,
        nesterov = opts.nesterov and true or false}, SGD)
    self.slots = self.momentum ~= 0 and {"momentum_buffer"} or {}
    build_groups(self, params, defaults, "SGD")
    return self
end

function SGD:step()
    local list = active(self)
    self.step_count = self.step_count + 1
    local n = #list
    if n == 0 then
        return
    end
    local P = ffi.new("clipl_tensor *[?]", n)
    local G = ffi.new("clipl_tensor *[?]", n)
    local B = ffi.new("clipl_tensor *[?]", n)
    local lr = ffi.new("double[?]", n)
    local wd = ffi.new("double[?]", n)
    -- parameters seen for the first time start their buffer from the gradient: run them apart
    local first, later = {}, {}
    for _, a in ipairs(list) do
        prepare_param(a.p.tensor, "SGD")
        local st = state_of(self, a)
        st.step = st.step + 1
        if st.step == 1 then first[#first + 1] = a else later[#later + 1] = a end
    end
    for pass, part in ipairs({first, later}) do
        if #part > 0 then
            for i, a in ipairs(part) do
                local st = state_of(self, a)
                P[i - 1], G[i - 1] = a.p.tensor, a.grad
                B[i - 1] = st.tensors.momentum_buffer
                lr[i - 1] = a.group.lr
                wd[i - 1] = decay_of(a.group, a.p)
            end
            check(C.clipl_sgd_step(#part, P, G, B, lr, wd, self.momentum, self.dampening,
                self.nesterov and 1 or 0, pass == 1 and 1 or 0))
        end
    end
    clamp_logit_scale(list)
end

-- ---- gradient clipping --------------------------------------------------------------------------

local function grads_of(params)
    local list
    if getmetatable(params) and params.groups then
        list = params:parameters()
    else
        list = {}
        for _, p in ipairs(named_list(params, "clip_grad_norm")) do
            list[#list + 1] = p.tensor
        end
    end
    local gs = {}
    for _, t in ipairs(list) do
        local g = t.grad
        if g ~= nil then
            gs[#gs + 1] = g
        end
    end
    return gs
end

--- clip.optim.clip_grad_norm(params or optimizer, max_norm): scales every gradient by
-- max_norm / (total + 1e-6) when the global L2 norm exceeds max_norm
-- (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
function M.clip_grad_norm(params, max_norm)
    if type(max_norm) ~= "number" or max_norm <= 0 then
        error("clip_grad_norm: max_norm must be a positive number, got " .. tostring(max_norm), 2)
    end
    local gs = grads_of(params)
    if #gs == 0 then
        return 0
    end
    local arr = ffi.new("clipl_tensor *[?]", #gs)
    for i, g in ipairs(gs) do
        arr[i - 1] = g
    end
    local out = ffi.new("double[1]")
    check(C.clipl_global_norm(#gs, arr, out))
    local total = out[0]
    local coef = max_norm / (total + 1e-6)
    if coef < 1 then
        local prev = C.clipl_set_grad_enabled(0)
        for _, g in ipairs(gs) do
            local rc = C.clipl_mul_scalar_(g, coef)
            if rc ~= 0 then
                C.clipl_set_grad_enabled(prev)
                check(rc)
            end
        end
        C.clipl_set_grad_enabled(prev)
    end
    return total
end

-- ---- schedules ----------------------------------------------------------------------------------

local Cosine = {}
Cosine.__index = Cosine

--- open_clip's cosine_lr: lr(s) = base * (s + 1) / warmup for s < warmup, then
-- min_lr + (base - min_lr) * (1 + cos(pi * (s - warmup) / (steps - warmup))) / 2.
-- clip.optim.cosine(opt, {warmup = 100, steps = 10000, min_lr = 0}) sets the lr of step 0 at once;
-- sched:step() moves to the next step (call it after opt:step()). Each group keeps its own base lr.
function M.cosine(opt, opts)
    opts = opts or {}
    local steps = opts.steps
    if type(steps) ~= "number" or steps < 1 then
        error("cosine: opts.steps (the total number of steps) is required", 2)
    end
    local self = setmetatable({opt = opt, warmup = opts.warmup or 0, steps = steps,
        min_lr = opts.min_lr or 0, last = 0, base = {}}, Cosine)
    for i, g in ipairs(opt.groups) do
        self.base[i] = opts.base_lr or g.lr
    end
    self:apply()
    return self
end

function Cosine:lr_at(s, base)
    if s < self.warmup then
        return base * (s + 1) / self.warmup
    end
    local e, es = s - self.warmup, self.steps - self.warmup
    local f = es > 0 and math.min(e / es, 1) or 1
    return self.min_lr + (base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * f))
end

function Cosine:apply()
    for i, g in ipairs(self.opt.groups) do
        g.lr = self:lr_at(self.last, self.base[i])
    end
end

function Cosine:step()
    self.last = self.last + 1
    self:apply()
    return self.opt.groups[1].lr
end

function Cosine:get_lr()
    return self.opt.groups[1].lr
end

function Cosine:state_dict()
    return {last = self.last, base = {unpack(self.base)}}
end

function Cosine:load_state_dict(sd)
    self.last = sd.last
    self.base = {unpack(sd.base)}
    self:apply()
end

-- ---- freezing -----------------------------------------------------------------------------------

--- clip.optim.freeze(params, pattern [, frozen = true]): parameters whose name matches the Lua
-- pattern stop requiring grad (or require it again with frozen = false), e.g. lock the image
-- tower as in LiT: clip.optim.freeze(model:parameters(), "^visual%."). Returns the count.
function M.freeze(params, pattern, frozen)
    if type(pattern) ~= "string" then
        error("freeze: pattern must be a string (a Lua pattern), got " .. type(pattern), 2)
    end
    local on = frozen == false and 1 or 0
    local n = 0
    for _, p in ipairs(named_list(params, "freeze")) do
        if p.name:find(pattern) then
            check(C.clipl_tensor_set_requires_grad(p.tensor, on))
            n = n + 1
        end
    end
    return n
end

--- clip.optim.select(params, pattern): name -> tensor of the parameters whose name matches.
function M.select(params, pattern)
    local out = {}
    for _, p in ipairs(named_list(params, "select")) do
        if p.name:find(pattern) then
            out[p.name] = p.tensor
        end
    end
    return out
end

return {optim = M}
