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
-- Creating an optimizer packs its parameters (f32 master weights) into one contiguous buffer: each
-- parameter tensor is re-pointed into it (clipl_tensor_rebind; the header stays, so the model and
-- every other holder see it; read-only file mappings are copied), and its gradient becomes a view
-- of a gradient buffer of the same layout, into which backward passes accumulate. zero_grad is one
-- memset, clip_grad_norm one reduction, and a step one C call (clipl_adamw_step_flat /
-- clipl_sgd_step_flat) over the ranges of the parameters that require grad and have a gradient,
-- with each range's lr and weight decay (groups); frozen parameters are skipped, and those frozen
-- when the optimizer is made get no buffers at all (a locked tower costs no gradient or state
-- memory; unfrozen later, they are packed at the next step). After each step a
-- parameter named logit_scale is clamped to [0, ln 100] (open_clip).
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check = lib.C, lib.check
local is_tensor = tensor.is_tensor

local M = {}

local LN100 = math.log(100)
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

-- ---- the flat buffers ---------------------------------------------------------------------------

local ALIGN = 16 -- floats: every parameter starts on a 64-byte boundary of the buffer

local function header_key(t)
    return tostring(ffi.cast("uintptr_t", ffi.cast("void *", t)))
end

-- A new zeroed storage of n floats (a Lua handle holding one reference).
local function new_storage(n)
    return ffi.gc(lib.check_ptr(C.clipl_storage_new(n * 4), 3), C.clipl_storage_release)
end

-- A contiguous f32 view of shape sizes at element offset off of storage s.
local function view_of(s, off, sizes)
    local shape, nd = lib.shape_arg(sizes)
    local strides = ffi.new("int64_t[8]")
    local st = 1
    for d = nd - 1, 0, -1 do
        strides[d] = st
        st = st * shape[d]
    end
    return lib.adopt(C.clipl_tensor_new_view(s, 0, nd, shape, strides, off))
end

-- Packs every parameter that requires grad (f32 master weights, each once) into one
-- 64-byte-aligned buffer (a frozen one, e.g. the locked tower of LiT, gets no buffers: it is packed
-- at the first step after it requires grad again, sync below): each
-- tensor is re-pointed into it (clipl_tensor_rebind: the header stays, so the model and every
-- other holder see the buffer; read-only mappings are copied), and gets a slot in a gradient
-- buffer of the same layout. self.flat = {n, pstore, gstore, params, grads, state, entries =
-- {{p, group, tensor, off, len, span, pptr, gview, attached}}}; span reaches the next entry (the
-- padding between parameters stays zero).
local function pack(self, what)
    local entries, seen, n, frozen = {}, {}, 0, {}
    for _, g in ipairs(self.groups) do
        for _, p in ipairs(g.params) do
            local t = p.tensor
            local key = header_key(t)
            if seen[key] then
                error(what .. ": parameter '" .. p.name .. "' appears twice (also as '" ..
                    seen[key] .. "')", 4)
            end
            seen[key] = p.name
            if t.dt ~= 0 then
                error(what .. ": parameter '" .. p.name .. "' is " ..
                    ffi.string(C.clipl_dtype_name(t.dt)) ..
                    "; parameters must be f32 tensors (master weights)", 4)
            end
            if C.clipl_tensor_requires_grad(t) == 0 then
                frozen[#frozen + 1] = t
            else
                local len = tonumber(C.clipl_tensor_numel(t))
                entries[#entries + 1] = {p = p, group = g, tensor = t, off = n, len = len}
                n = n + math.ceil(len / ALIGN) * ALIGN
            end
        end
    end
    local f = {n = n, entries = entries, state = {}, frozen = frozen}
    self.flat = f
    if n == 0 then
        return
    end
    f.pstore, f.gstore = new_storage(n), new_storage(n)
    f.params, f.grads = view_of(f.pstore, 0, {n}), view_of(f.gstore, 0, {n})
    for i, e in ipairs(entries) do
        check(C.clipl_tensor_rebind(e.tensor, f.pstore, e.off), 4)
        e.pptr = e.tensor.ptr
        e.span = (entries[i + 1] and entries[i + 1].off or n) - e.off
        e.gview = view_of(f.gstore, e.off, e.tensor:size())
    end
    f.off = ffi.new("int64_t[?]", #entries)
    f.len = ffi.new("int64_t[?]", #entries)
    f.lr = ffi.new("double[?]", #entries)
    f.wd = ffi.new("double[?]", #entries)
    f.step = ffi.new("int64_t[?]", #entries)
    f.first = ffi.new("int[?]", #entries)
end

-- Brings the parameters and their gradients back into the buffers: a parameter re-pointed
-- elsewhere since (another optimizer packed it) is packed again; a gradient that is not the
-- buffer's slot (made by a backward before the slot was attached, or set by hand) is copied into
-- its slot (unless copy is false: zero_grad) and the slot becomes the gradient, so later backward
-- passes accumulate in place; a slot whose gradient was dropped is zeroed.
local function sync(self, copy)
    local f = self.flat
    for _, t in ipairs(f.frozen) do
        if C.clipl_tensor_requires_grad(t) == 1 then -- unfrozen since packing: pack again
            local sd = self:state_dict()             -- (views of the old buffers, kept alive)
            pack(self, self.kind)
            self:load_state_dict(sd)
            return sync(self, copy)
        end
    end
    for _, e in ipairs(f.entries) do
        local t = e.tensor
        if t.ptr ~= e.pptr then
            check(C.clipl_tensor_rebind(t, f.pstore, e.off), 3)
            e.pptr = t.ptr
        end
        local g = C.clipl_tensor_grad(t)
        if g == nil then
            if e.attached then
                check(C.clipl_tensor_fill_(e.gview, 0), 3)
                e.attached = false
            end
        else
            local rc = 0
            if g.ptr ~= e.gview.ptr then
                rc = copy == false and 0 or C.clipl_tensor_copy_(e.gview, g)
                if rc == 0 then
                    rc = C.clipl_tensor_set_grad(t, e.gview)
                end
            end
            C.clipl_tensor_release(g)
            check(rc, 3)
            e.attached = true
        end
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

local function clamp_logit_scale(list)
    for _, e in ipairs(list) do
        if is_logit_scale(e.p.name) then
            local t = e.tensor
            local prev = C.clipl_set_grad_enabled(0)
            local rc = 0
            for i = 0, e.len - 1 do
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

--- Zeroes every gradient in place: one memset of the gradient buffer (PyTorch's
-- zero_grad(set_to_none=False)); zero_grad(true) also clears them (set to nil, set_to_none=True),
-- so parameters that the next backward does not reach are skipped by the next step.
function Optimizer:zero_grad(set_to_none)
    local f = self.flat
    if f.n == 0 then
        return
    end
    sync(self, false)
    if set_to_none then
        for _, e in ipairs(f.entries) do
            check(C.clipl_tensor_set_grad(e.tensor, nil))
            e.attached = false
        end
    end
    ffi.fill(C.clipl_storage_data(f.gstore), f.n * 4)
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

local function state_key(e)
    return e.group.index .. ":" .. e.p.name
end

-- The state of entry e ({step =, tensors = {slot = view of the slot's buffer}}), created at step 0
-- (zeros) on first use; the state buffers are allocated with the first state.
local function state_of(self, e)
    local key = state_key(e)
    local st = self.state[key]
    if not st then
        local f = self.flat
        st = {step = 0, tensors = {}}
        for _, slot in ipairs(self.slots) do
            if not f.state[slot] then
                local s = new_storage(f.n)
                f.state[slot] = {store = s, all = view_of(s, 0, {f.n})}
            end
            st.tensors[slot] = view_of(f.state[slot].store, e.off, e.tensor:size())
            check(C.clipl_tensor_fill_(st.tensors[slot], 0), 3)
        end
        self.state[key] = st
    end
    return st
end

--- The state for a checkpoint: {step =, groups = {{lr =, weight_decay =, ...}}, tensors =
-- {["<group>:<name>.<slot>"] = tensor}, steps = {["<group>:<name>"] = n}}. Tensors are the live
-- state (views of the optimizer's buffers: copy them to keep a snapshot).
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
    end
    for _, e in ipairs(self.flat.entries) do
        local key = state_key(e)
        local st = self.state[key]
        if st then
            for slot, t in pairs(st.tensors) do
                sd.tensors[key .. "." .. slot] = t
            end
            sd.steps[key] = st.step
        end
    end
    return sd
end

--- Restores a state_dict (tensors are copied into the optimizer's buffers; sizes must match).
function Optimizer:load_state_dict(sd)
    for gi, hyper in ipairs(sd.groups or {}) do
        local g = self.groups[gi]
        if g == nil then
            error("load_state_dict: the state has more parameter groups than the optimizer", 2)
        end
        for k, v in pairs(hyper) do
            g[k] = v
        end
    end
    local steps = sd.steps or {}
    for _, e in ipairs(self.flat.entries) do
        local key = state_key(e)
        for _, slot in ipairs(steps[key] and self.slots or {}) do
            local t = sd.tensors[key .. "." .. slot]
            if t == nil then
                error("load_state_dict: missing state '" .. key .. "." .. slot .. "'", 2)
            end
            if t:numel() ~= e.len then
                error("load_state_dict: state '" .. key .. "." .. slot .. "' has " ..
                    t:numel() .. " elements, the parameter " .. e.len, 2)
            end
        end
    end
    self.step_count = sd.step or 0
    local old = self.state
    self.state = {}
    for _, e in ipairs(self.flat.entries) do
        local key = state_key(e)
        if steps[key] then
            local src = {}
            for _, slot in ipairs(self.slots) do -- copies first: sd may hold our own views
                src[slot] = sd.tensors[key .. "." .. slot]:to("f32"):reshape(e.tensor:size())
                src[slot] = src[slot]:clone()
            end
            local st = state_of(self, e)
            st.step = steps[key]
            for slot, t in pairs(src) do
                st.tensors[slot]:copy(t)
            end
        elseif old[key] then
            for _, t in pairs(old[key].tensors) do
                check(C.clipl_tensor_fill_(t, 0))
            end
        end
    end
end

-- The ranges of one step: every parameter that requires grad and has a gradient, in buffer order,
-- neighbours with the same facts (what fills one entry of the extra array) merged. Returns the
-- number of ranges and the list of entries taken.
local function ranges(self, extra)
    local f = self.flat
    sync(self, true)
    local list, n, prev_end = {}, 0, -1
    for _, e in ipairs(f.entries) do
        if e.attached and C.clipl_tensor_requires_grad(e.tensor) == 1 then
            local st = state_of(self, e)
            st.step = st.step + 1
            local lr, wd, x = e.group.lr, decay_of(e.group, e.p), extra(st)
            local k = n - 1
            if n > 0 and e.off == prev_end and f.lr[k] == lr and f.wd[k] == wd and
                f.step[k] == x then
                f.len[k] = f.len[k] + e.span
            else
                f.off[n], f.len[n], f.lr[n], f.wd[n], f.step[n] = e.off, e.span, lr, wd, x
                n = n + 1
            end
            prev_end = e.off + e.span
            list[#list + 1] = e
        end
    end
    return n, list
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
    pack(self, "AdamW")
    return self
end

local function step_of(st)
    return st.step
end

--- One update of every parameter that requires grad and has a gradient: one C call, one OpenMP
-- loop over the parameter buffer.
function AdamW:step()
    self.step_count = self.step_count + 1
    local f = self.flat
    if f.n == 0 then
        return
    end
    local n, list = ranges(self, step_of)
    if n == 0 then
        return
    end
    check(C.clipl_adamw_step_flat(f.params, f.grads, f.state.exp_avg.all, f.state.exp_avg_sq.all,
        n, f.off, f.len, f.lr, f.wd, f.step, self.beta1, self.beta2, self.eps))
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
    pack(self, "SGD")
    return self
end

-- a parameter seen for the first time starts its momentum buffer from the gradient
local function is_first(st)
    return st.step == 1 and 1 or 0
end

function SGD:step()
    self.step_count = self.step_count + 1
    local f = self.flat
    if f.n == 0 then
        return
    end
    local n, list = ranges(self, is_first)
    if n == 0 then
        return
    end
    for k = 0, n - 1 do
        f.first[k] = f.step[k]
    end
    local buf = f.state.momentum_buffer
    check(C.clipl_sgd_step_flat(f.params, f.grads, buf and buf.all, n, f.off, f.len, f.lr, f.wd,
        f.first, self.momentum, self.dampening, self.nesterov and 1 or 0))
    clamp_logit_scale(list)
end

-- ---- gradient clipping --------------------------------------------------------------------------

-- The gradients to clip: an optimizer's whole gradient buffer (one tensor), or the gradients of a
-- list of parameters.
local function grads_of(params)
    if getmetatable(params) and params.flat then
        local f = params.flat
        if f.n == 0 then
            return {}
        end
        sync(params, true)
        return {f.grads}
    end
    local gs = {}
    for _, p in ipairs(named_list(params, "clip_grad_norm")) do
        local g = p.tensor.grad
        if g ~= nil then
            gs[#gs + 1] = g
        end
    end
    return gs
end

--- clip.optim.clip_grad_norm(params or optimizer, max_norm): scales every gradient by
-- max_norm / (total + 1e-6) when the global L2 norm exceeds max_norm
-- (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping. With an optimizer it is one
-- reduction and one scaling of its gradient buffer.
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
    check(C.clipl_global_norm(#gs, arr, dbl))
    local total = dbl[0]
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
