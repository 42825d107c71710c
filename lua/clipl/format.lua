--- Printing tensors the way Torch7 does: aligned columns with a common format (and a common scale
-- factor when values span many magnitudes), 2-d slices of bigger tensors, and a trailer like
-- `[clipl.FloatTensor of size 2x3]`. Big tensors have their middle elided.
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check = lib.C, lib.check

local M = {}

M.edge = 3       -- rows/columns kept at each end when a dim is elided
M.threshold = 1000 -- elide when a tensor has more elements than this

local function size_str(sizes)
    if #sizes == 0 then
        return "scalar"
    end
    return table.concat(sizes, "x")
end

-- Chooses a format for all values: integers when every value is one, else fixed or scientific.
local function choose_format(values)
    local all_int, max_abs, min_abs = true, 0, math.huge
    local finite = 0
    for i = 1, #values do
        local v = values[i]
        -- non-finite values print as nan/inf and do not steer the format
        if v == v and v ~= math.huge and v ~= -math.huge then
            finite = finite + 1
            if v % 1 ~= 0 then
                all_int = false
            end
            local a = math.abs(v)
            if a > max_abs then max_abs = a end
            if a < min_abs and a > 0 then min_abs = a end
        end
    end
    if finite == 0 then
        return "%5s", 1, 5
    end
    if all_int then
        local width = #string.format("%d", max_abs) + 1
        return "%" .. width .. "d", 1, width, true
    end
    local exp_max = max_abs > 0 and math.floor(math.log10(max_abs)) or 0
    local exp_min = min_abs < math.huge and math.floor(math.log10(min_abs)) or 0
    if exp_max - exp_min > 4 or exp_max > 5 or exp_max < -4 then
        if exp_max - exp_min <= 4 and (exp_max > 5 or exp_max < -4) then
            -- a common scale factor keeps columns readable (Torch7 prints "1e-05 *")
            local scale = 10 ^ exp_max
            return "%10.4f", scale, 10
        end
        return "%12.4e", 1, 12
    end
    local width = math.max(exp_max, 0) + 7
    return "%" .. width .. ".4f", 1, width
end

local function fmt_value(v, f, scale, width, is_int)
    if v ~= v then
        return string.format("%" .. width .. "s", "nan")
    elseif v == math.huge or v == -math.huge then
        return string.format("%" .. width .. "s", v > 0 and "inf" or "-inf")
    end
    if is_int then
        return string.format(f, v)
    end
    return string.format(f, v / scale)
end

-- Indices shown along a dim of the given size: all, or the first and last `edge` with a gap (0).
local function shown(size, elide)
    local idx = {}
    if elide and size > 2 * M.edge then
        for i = 1, M.edge do idx[#idx + 1] = i end
        idx[#idx + 1] = 0
        for i = size - M.edge + 1, size do idx[#idx + 1] = i end
    else
        for i = 1, size do idx[i] = i end
    end
    return idx
end

function M.tensor(t)
    local sizes = t:size()
    local n = t:numel()
    local trailer = "[" .. t:type() .. " of size " .. size_str(sizes) .. "]"
    if n == 0 then
        return "[" .. t:type() .. " with no dimension]"
    end
    local elide = n > M.threshold
    local buf = ffi.new("double[?]", n)
    check(C.clipl_tensor_to_doubles(t, buf, n))
    -- collect the values that will be shown, to choose one format for all of them
    local strides = {}
    local s = 1
    for d = #sizes, 1, -1 do
        strides[d] = s
        s = s * sizes[d]
    end
    local visible = {}
    local function collect(d, base)
        if d > #sizes then
            visible[#visible + 1] = buf[base]
            return
        end
        for _, i in ipairs(shown(sizes[d], elide)) do
            if i > 0 then
                collect(d + 1, base + (i - 1) * strides[d])
            end
        end
    end
    collect(1, 0)
    local f, scale, width, is_int = choose_format(visible)
    local out = {}
    local function line(text) out[#out + 1] = text end
    if #sizes == 0 then
        return fmt_value(buf[0], f, scale, width, is_int):gsub("^%s+", "") .. "\n" .. trailer
    end
    if scale ~= 1 then
        line(string.format("%.0e *", scale))
    end
    local function row(base, ncols, stride)
        local cells = {}
        for _, j in ipairs(shown(ncols, elide)) do
            if j == 0 then
                cells[#cells + 1] = string.rep(" ", width - 3) .. "..."
            else
                cells[#cells + 1] = fmt_value(buf[base + (j - 1) * stride], f, scale, width, is_int)
            end
        end
        return table.concat(cells, " ")
    end
    local function matrix(base)
        local nd = #sizes
        if nd == 1 then
            for _, i in ipairs(shown(sizes[1], elide)) do
                line(i == 0 and string.rep(" ", width - 3) .. "..." or
                    fmt_value(buf[base + i - 1], f, scale, width, is_int))
            end
            return
        end
        for _, i in ipairs(shown(sizes[nd - 1], elide)) do
            if i == 0 then
                line(" ...")
            else
                line(row(base + (i - 1) * strides[nd - 1], sizes[nd], strides[nd]))
            end
        end
    end
    if #sizes <= 2 then
        matrix(0)
    else
        local prefix = {}
        local function slices(d, base)
            if d > #sizes - 2 then
                line("(" .. table.concat(prefix, ",") .. ",.,.) = ")
                matrix(base)
                line("")
                return
            end
            for _, i in ipairs(shown(sizes[d], elide)) do
                if i == 0 then
                    line("...")
                    line("")
                else
                    prefix[d] = i
                    slices(d + 1, base + (i - 1) * strides[d])
                end
            end
            prefix[d] = nil
        end
        slices(1, 0)
    end
    line(trailer)
    return table.concat(out, "\n")
end

return M
