--- Embedding indexes: L2-normalised embeddings (N x D, f32 or f16) in one safetensors file as the
-- tensor `embeddings`, with the items' paths (or texts) as a JSON array in the metadata key
-- `paths`. Written atomically, so an interrupted run always leaves a valid index.
--
--   local idx = clip.index.open("photos.safetensors")      -- or a new, empty one
--   idx:add(paths, embeddings); idx:save()
--   for _, hit in ipairs(idx:search(query_embedding, 10)) do print(hit.path, hit.score) end
local cjson = require "cjson"

local M = {}

local Index = {}
Index.__index = Index

local function clip()
    return require "clipl"
end

--- Opens an index file, or starts an empty one when the file does not exist (nothing is written
-- until idx:save()). opts.dtype: "f32" (default) or "f16" for the stored embeddings; opts.kind:
-- "image" (default) or "text", kept in the metadata. Raises naming the file when it is not an
-- index.
function M.open(path, opts)
    opts = opts or {}
    local self = setmetatable({path = path, paths = {}, known = {}, chunks = {}, n = 0,
        dtype = opts.dtype or "f32", kind = opts.kind or "image"}, Index)
    local f = io.open(path, "rb")
    if not f then
        return self
    end
    f:close()
    local tensors, meta = clip().load_safetensors(path)
    local emb = tensors.embeddings
    if not emb or emb:dim() ~= 2 then
        error(path .. ": not a clipl index (no 2-d tensor 'embeddings')", 2)
    end
    local ok, paths = pcall(cjson.decode, meta and meta.paths or "")
    if not ok or type(paths) ~= "table" or #paths ~= emb:size(1) then
        error(path .. ": not a clipl index (metadata 'paths' must be a JSON array of " ..
            emb:size(1) .. " entries)", 2)
    end
    self.dtype = emb:dtype()
    self.kind = meta.kind or self.kind
    self.chunks[1] = emb:float()
    self.n = emb:size(1)
    for i, p in ipairs(paths) do
        self.paths[i] = p
        self.known[p] = i
    end
    return self
end

--- Number of items.
function Index:size()
    return self.n
end

--- true when the index already has an item for path.
function Index:has(path)
    return self.known[path] ~= nil
end

--- Appends items: paths (array of strings) and their embeddings (N x D; normalised here).
-- Items already present are skipped (returns how many were added).
function Index:add(paths, embeddings)
    local zeroshot = require("clipl.zeroshot").zeroshot
    embeddings = zeroshot.normalize(embeddings:float())
    local keep = {}
    for i, p in ipairs(paths) do
        if not self.known[p] then
            keep[#keep + 1] = i
        end
    end
    if #keep == 0 then
        return 0
    end
    if #keep < #paths then
        local rows = {}
        for j, i in ipairs(keep) do
            rows[j] = embeddings[i]:view(1, -1)
        end
        embeddings = clip().cat(rows, 1)
    end
    for _, i in ipairs(keep) do
        self.n = self.n + 1
        self.paths[self.n] = paths[i]
        self.known[paths[i]] = self.n
    end
    self.chunks[#self.chunks + 1] = embeddings
    self.matrix = nil
    return #keep
end

--- All embeddings as one N x D f32 tensor (nil when empty).
function Index:embeddings()
    if self.n == 0 then
        return nil
    end
    if #self.chunks > 1 then
        self.chunks = {clip().cat(self.chunks, 1)}
    end
    return self.chunks[1]
end

--- Writes the index atomically (temporary file, fsync, rename).
function Index:save()
    local emb = self:embeddings()
    if not emb then
        return
    end
    local stored = self.dtype == "f16" and emb:half() or emb
    clip().save_safetensors(self.path, {embeddings = stored},
        {paths = cjson.encode(self.paths), kind = self.kind, format = "clipl-index-1"})
end

--- The k items most similar (cosine) to a query embedding (D or 1 x D):
-- an array of {path =, score =, index =}, best first.
function Index:search(query, k)
    local emb = self:embeddings()
    if not emb then
        return {}
    end
    local zeroshot = require("clipl.zeroshot").zeroshot
    query = zeroshot.normalize(query:float():view(1, -1))
    local scores = emb:matmul(query:t()):view(-1)
    k = math.min(k or 10, self.n)
    local values, indices = scores:topk(k, 1)
    local hits = {}
    for j = 1, k do
        local i = indices[j]
        hits[j] = {path = self.paths[i], score = values[j], index = i}
    end
    return hits
end

--- Pairs of items whose cosine similarity is at least threshold: an array of
-- {a =, b =, score =} (a < b), most similar first. Works in blocks of rows.
function Index:duplicates(threshold, block)
    local emb = self:embeddings()
    local pairs_ = {}
    if not emb then
        return pairs_
    end
    block = block or 1024
    for r0 = 1, self.n, block do
        local rows = math.min(block, self.n - r0 + 1)
        local sim = emb:narrow(1, r0, rows):matmul(emb:t())
        local mask = sim:ge(threshold)
        local hits = mask:sum():item()
        if hits > 0 then
            local data = sim:totable()
            for i = 1, rows do
                local a = r0 + i - 1
                local row = data[i]
                for b = a + 1, self.n do
                    if row[b] >= threshold then
                        pairs_[#pairs_ + 1] = {a = self.paths[a], b = self.paths[b], score = row[b]}
                    end
                end
            end
        end
    end
    table.sort(pairs_, function(x, y) return x.score > y.score end)
    return pairs_
end

M.Index = Index

return {index = M}
