-- Durability (issue 9): what a pinned map holds after its writer is killed
-- with SIGKILL at a random point. A map update is one bpf() syscall, which
-- a signal cannot cut in half: every element holds the last value written
-- whole, whatever its size. (Tearing is a matter of readers running while a
-- writer writes a value larger than 8 bytes in place, as array maps do:
-- BPF_F_LOCK, flag "lock", on a value holding a struct bpf_spin_lock is
-- how to get atomic struct updates then; spec/maptypes_spec.lua races
-- two processes on it.)
local h = require "helper"
local bpf = require "bpfhost"

describe("durability", function()
  describe("#root kernel", function()
    it("values of pinned maps survive SIGKILL of the writer, never torn", function()
      local dir, cleanup = h.tmp_bpffs()
      local ok, e = pcall(function()
        local T = bpf.kernel_type("u64")
        local small = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 64}
        -- 64-byte values: 8 copies of one u64, written whole or not at all
        local big = bpf.map_create{type = "hash", key = "u32", value = 64, max_entries = 64}
        local wide = bpf.map_create{type = "array", key = "u32", value = 64, max_entries = 64}
        small:pin(dir .. "/small"); big:pin(dir .. "/big"); wide:pin(dir .. "/wide")
        local writer = ([[
          local small, big, wide = bpf.open_pinned(%q), bpf.open_pinned(%q), bpf.open_pinned(%q)
          local T = bpf.kernel_type("u64")
          local i = 0
          while true do
            i = i + 1
            local k = i %% 64
            small:update(k, i * 65537)
            local v = T:encode(i):rep(8)
            big:update(k, v)
            wide:update(k, v)
            if i == 1000 then io.stderr:write("going\n"); io.stderr:flush() end
          end]]):format(dir .. "/small", dir .. "/big", dir .. "/wide")
        math.randomseed(os.time())
        for round = 1, 5 do
          local errf = os.tmpname()
          -- killed at a random point after it has written a while
          local delay = ("0.%02d"):format(math.random(0, 99))
          h.sh(("(%s -e %q 2>%s & pid=$!; while ! grep -q going %s; do kill -0 $pid || break; sleep 0.01; done; " ..
            "sleep %s; kill -KILL $pid; wait $pid) >/dev/null 2>&1"):format(h.host, writer, errf, errf, delay))
          local err = io.open(errf):read("*a")
          os.remove(errf)
          assert.matches("going", err, "round " .. round)
          local n = 0
          for k, v in small:iterate() do
            if v ~= 0 then
              assert.equal(0, v % 65537, ("round %d: small[%d] = %s is torn"):format(round, k, tostring(v)))
              n = n + 1
            end
          end
          assert.is_true(n > 0)
          for _, m in ipairs{big, wide} do
            for k, v in m:iterate() do
              if v ~= ("\0"):rep(64) then
                assert.equal(v:sub(1, 8):rep(8), v, ("round %d: %s[%d] is torn"):format(round, m.name, k))
                assert.equal(k, T:decode(v:sub(1, 8)) % 64)
              end
            end
          end
        end
        small:close(); big:close(); wide:close()
      end)
      cleanup()
      assert(ok, e)
    end)
  end)
end)
