// Labeling kernels; the numba twin is hdlfast/labeling/numba_kernels.py and both must agree bit
// for bit: votes accumulate float64 per class in voter order, winner = largest vote, then
// largest raw similarity sum, then smallest class id.
#include "cpu/hdl.h"

#include <algorithm>
#include <cassert>
#include <numeric>
#include <queue>
#include <utility>
#include <vector>

#include "cpu/parallel.h"

namespace hdlfast {
namespace cpu {
namespace {

struct Vote {
  int64_t label;
  double conf;
};

// Vote of n voters (cls, sim); weight max(sim, 0), or 1 when uniform. (-1, 0) for no voter.
Vote vote(const int64_t* cls, const float* sim, int64_t n, bool uniform) {
  int64_t best_c = -1;
  double best_v = -1.0, best_r = 0.0, total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    total += uniform ? 1.0 : std::max(static_cast<double>(sim[i]), 0.0);
    const int64_t c = cls[i];
    bool seen = false;
    for (int64_t j = 0; j < i && !seen; ++j) seen = cls[j] == c;
    if (seen) continue;
    double v = 0.0, r = 0.0;
    for (int64_t j = i; j < n; ++j) {
      if (cls[j] != c) continue;
      v += uniform ? 1.0 : std::max(static_cast<double>(sim[j]), 0.0);
      r += static_cast<double>(sim[j]);
    }
    if (best_c < 0 || v > best_v || (v == best_v && (r > best_r || (r == best_r && c < best_c)))) {
      best_c = c;
      best_v = v;
      best_r = r;
    }
  }
  return {best_c, total > 0 ? best_v / total : 0.0};
}

// Out-neighbours of c in column order, then in-neighbours not already listed, by edge
// similarity descending (ties: smaller source).
void candidates(int64_t c, const int64_t* idx, const float* sims, int64_t k,
                const int64_t* indptr, const int32_t* src, std::vector<int64_t>& cand,
                std::vector<float>& cand_s, std::vector<std::pair<float, int64_t>>& ins) {
  cand.assign(idx + c * k, idx + (c + 1) * k);
  cand_s.assign(sims + c * k, sims + (c + 1) * k);
  ins.clear();
  for (int64_t t = indptr[c]; t < indptr[c + 1]; ++t) {
    const int64_t v = src[t];
    if (std::find(idx + c * k, idx + (c + 1) * k, v) != idx + (c + 1) * k) continue;
    const int64_t col = std::find(idx + v * k, idx + (v + 1) * k, c) - (idx + v * k);
    ins.emplace_back(sims[v * k + col], v);
  }
  // sources arrive ascending: a stable sort by similarity keeps them so among ties
  std::stable_sort(ins.begin(), ins.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& e : ins) {
    cand.push_back(e.second);
    cand_s.push_back(e.first);
  }
}

struct SearchResult {
  int64_t label, steps, cycles;
  double conf;
};

SearchResult search_one(int64_t u, const int64_t* idx, const float* sims, int64_t k,
                        const int64_t* indptr, const int32_t* src, const int64_t* labels,
                        int64_t max_visits, bool uniform) {
  std::vector<int64_t> visited{u}, path{u}, scan{0}, cand, vcls;
  std::vector<float> cand_s, vsim;
  std::vector<std::pair<float, int64_t>> ins;
  int64_t cycles = 0;
  bool arrived = true;
  while (!path.empty()) {
    const int64_t c = path.back();
    candidates(c, idx, sims, k, indptr, src, cand, cand_s, ins);
    const int64_t n = static_cast<int64_t>(cand.size());
    if (arrived) {
      vcls.clear();
      vsim.clear();
      for (int64_t t = 0; t < n; ++t) {
        if (labels[cand[t]] >= 0) {
          vcls.push_back(labels[cand[t]]);
          vsim.push_back(cand_s[t]);
        }
      }
      if (!vcls.empty()) {
        const Vote v = vote(vcls.data(), vsim.data(), static_cast<int64_t>(vcls.size()), uniform);
        return {v.label, static_cast<int64_t>(visited.size()) - 1, cycles, v.conf};
      }
    }
    arrived = false;
    int64_t t = scan.back();
    bool moved = false;
    while (t < n) {
      const int64_t v = cand[t++];
      if (std::find(visited.begin(), visited.end(), v) != visited.end()) {
        ++cycles;
        continue;
      }
      scan.back() = t;
      if (static_cast<int64_t>(visited.size()) == max_visits) {
        return {-1, max_visits, cycles, 0.0};
      }
      visited.push_back(v);
      path.push_back(v);
      scan.push_back(0);
      moved = arrived = true;
      break;
    }
    if (!moved) {
      path.pop_back();
      scan.pop_back();
    }
  }
  return {-1, static_cast<int64_t>(visited.size()), cycles, 0.0};
}

}  // namespace

// Each worker scans every edge (a cheap sequential read) and handles only the targets in its
// own range, so the random writes are split without atomics and sources stay ascending.
void reverse_indptr(const int64_t* idx, int64_t rows, int64_t k, int64_t n, int64_t* indptr) {
  std::fill(indptr, indptr + n + 1, int64_t{0});
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = 0; i < rows * k; ++i) {
      const int64_t t = idx[i];
      assert(t >= 0 && t < n);  // debug builds: a neighbour index in range
      if (t >= b && t < e) ++indptr[t + 1];
    }
  });
  for (int64_t t = 0; t < n; ++t) indptr[t + 1] += indptr[t];
}

void reverse_fill(const int64_t* idx, int64_t rows, int64_t k, int64_t n, const int64_t* indptr,
                  int32_t* src) {
  std::vector<int64_t> fill(indptr, indptr + n);
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = 0; i < rows * k; ++i) {
      const int64_t t = idx[i];
      assert(t >= 0 && t < n);  // debug builds: a neighbour index in range
      if (t >= b && t < e) src[fill[t]++] = static_cast<int32_t>(i / k);
    }
  });
}

void vote_rows(const int64_t* nbr_idx, const float* nbr_sims, int64_t rows, int64_t k,
               const int64_t* db_labels, bool uniform, int64_t* out_lab, double* out_conf) {
  parallel_for(rows, 256, [&](int64_t b, int64_t e, int) {
    std::vector<int64_t> cls(static_cast<size_t>(k));
    for (int64_t r = b; r < e; ++r) {
      for (int64_t c = 0; c < k; ++c) cls[c] = db_labels[nbr_idx[r * k + c]];
      const Vote v = vote(cls.data(), nbr_sims + r * k, k, uniform);
      out_lab[r] = v.label;
      out_conf[r] = v.conf;
    }
  });
}

int64_t propagate_levels(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                         const int64_t* indptr, const int32_t* src, int64_t* labels, double* conf,
                         int32_t* level, int8_t* prov, bool uniform, Interrupt& stop) {
  // A point's label and support share one 8-byte slot: the random accesses of the votes and
  // of the support updates each touch one cache line (labels are < 2^31, checked in Python).
  struct Slot {
    int32_t label, support;
  };
  std::vector<Slot> st(static_cast<size_t>(n));
  for (int64_t u = 0; u < n; ++u) st[u] = {static_cast<int32_t>(labels[u]), 0};
  std::vector<int64_t> frontier, next;
  // Initial support pushed from the labeled points through their in-edges: O(labeled x deg).
  auto push_support = [&](const std::vector<int64_t>& from, std::vector<int64_t>& rose) {
    rose.clear();
    for (size_t f = 0; f < from.size(); ++f) {
      if (f + 8 < from.size()) {  // the next segments' slots, ahead of use
        const int64_t ahead = from[f + 8];
        for (int64_t e = indptr[ahead]; e < indptr[ahead + 1]; ++e)
          __builtin_prefetch(&st[src[e]], 1);
      }
      const int64_t w = from[f];
      for (int64_t e = indptr[w]; e < indptr[w + 1]; ++e) {
        Slot& s = st[src[e]];
        if (s.label < 0 && s.support++ == 0) rose.push_back(src[e]);
      }
    }
    std::sort(rose.begin(), rose.end());
  };
  for (int64_t u = 0; u < n; ++u) {
    if (labels[u] >= 0) next.push_back(u);
  }
  push_support(next, frontier);
  std::vector<std::vector<int64_t>> by_support(static_cast<size_t>(k) + 1);
  std::vector<Vote> votes;
  int64_t h = 0;
  while (!frontier.empty()) {
    ++h;
    for (auto& g : by_support) g.clear();
    for (int64_t u : frontier) by_support[st[u].support].push_back(u);  // ascending ids
    for (int64_t s = k; s >= 1; --s) {  // sub-levels, most supported first
      const auto& members = by_support[s];
      const int64_t m = static_cast<int64_t>(members.size());
      if (m == 0) continue;
      if (stop.requested()) return -1;
      votes.resize(static_cast<size_t>(m));
      parallel_for(m, 4096, [&](int64_t b, int64_t e, int) {
        std::vector<int64_t> cls(static_cast<size_t>(k));
        std::vector<float> sim(static_cast<size_t>(k));
        for (int64_t i = b; i < e; ++i) {
          if (i + 16 < e) __builtin_prefetch(idx + members[i + 16] * k);
          if (i + 8 < e) {  // neighbour slots of a member ahead (its idx row is cached by now)
            const int64_t* row = idx + members[i + 8] * k;
            for (int64_t c = 0; c < k; ++c) __builtin_prefetch(&st[row[c]]);
          }
          const int64_t u = members[i];
          int64_t cnt = 0;
          for (int64_t c = 0; c < k; ++c) {
            assert(idx[u * k + c] >= 0 && idx[u * k + c] < n);  // debug builds
            const int32_t lab = st[idx[u * k + c]].label;
            if (lab >= 0) {
              cls[cnt] = lab;
              sim[cnt++] = sims[u * k + c];
            }
          }
          votes[i] = vote(cls.data(), sim.data(), cnt, uniform);
        }
      });
      for (int64_t i = 0; i < m; ++i) {  // the sub-level is labeled together
        const int64_t u = members[i];
        st[u].label = static_cast<int32_t>(votes[i].label);
        labels[u] = votes[i].label;
        conf[u] = votes[i].conf;
        level[u] = static_cast<int32_t>(h);
        prov[u] = 1;
      }
    }
    push_support(frontier, next);  // O(N k) over all levels
    frontier.swap(next);
  }
  return h;
}

int64_t propagate_sequential(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                             const int64_t* indptr, const int32_t* src, int64_t* labels,
                             double* conf, int32_t* level, int8_t* prov, bool uniform,
                             Interrupt& stop) {
  struct Key {
    int64_t support;
    double purity, raw;
    int64_t u;
    bool operator<(const Key& o) const {  // priority_queue top = the point labeled next
      if (support != o.support) return support < o.support;
      if (purity != o.purity) return purity < o.purity;
      if (raw != o.raw) return raw < o.raw;
      return u > o.u;
    }
  };
  std::vector<int64_t> cls(static_cast<size_t>(k));
  std::vector<float> sim(static_cast<size_t>(k));
  // Support, vote and similarity sum of u's labeled neighbours.
  auto key_of = [&](int64_t u, Vote& v) {
    int64_t cnt = 0;
    double raw = 0.0;
    for (int64_t c = 0; c < k; ++c) {
      const int64_t lab = labels[idx[u * k + c]];
      if (lab >= 0) {
        cls[cnt] = lab;
        sim[cnt++] = sims[u * k + c];
        raw += static_cast<double>(sims[u * k + c]);
      }
    }
    v = vote(cls.data(), sim.data(), cnt, uniform);
    return Key{cnt, v.conf, raw, u};
  };
  std::vector<Key> current(static_cast<size_t>(n));
  std::priority_queue<Key> heap;
  Vote v;
  for (int64_t u = 0; u < n; ++u) {
    if (labels[u] >= 0) continue;
    current[u] = key_of(u, v);
    if (current[u].support > 0) heap.push(current[u]);
  }
  int64_t step = 0;
  while (!heap.empty()) {
    if ((step & 4095) == 0 && stop.requested()) return -1;
    const Key top = heap.top();
    heap.pop();
    const Key& now = current[top.u];
    if (labels[top.u] >= 0 || top.support != now.support || top.purity != now.purity ||
        top.raw != now.raw) {
      continue;  // stale entry
    }
    key_of(top.u, v);
    labels[top.u] = v.label;
    conf[top.u] = v.conf;
    level[top.u] = static_cast<int32_t>(++step);
    prov[top.u] = 1;
    for (int64_t e = indptr[top.u]; e < indptr[top.u + 1]; ++e) {
      const int64_t w = src[e];
      if (labels[w] >= 0) continue;
      current[w] = key_of(w, v);
      heap.push(current[w]);
    }
  }
  return step;
}

void search(const int64_t* idx, const float* sims, int64_t n, int64_t k, const int64_t* indptr,
            const int32_t* src, const int64_t* labels, const int64_t* targets, int64_t n_targets, int64_t max_visits, bool uniform, int64_t* out_lab,
            double* out_conf, int64_t* out_steps, int64_t* out_cycles) {
  (void)n;
  parallel_for(n_targets, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const SearchResult r =
          search_one(targets[i], idx, sims, k, indptr, src, labels, max_visits, uniform);
      out_lab[i] = r.label;
      out_conf[i] = r.conf;
      out_steps[i] = r.steps;
      out_cycles[i] = r.cycles;
    }
  });
}

}  // namespace cpu
}  // namespace hdlfast
