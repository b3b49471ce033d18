// recbole-kgin's fused CPU kernels (built by recbole_kgin/kernel_build.py, used by recbole_kgin/model/fused.py).
//
// KGIN's relation-aware KG mean (paper Eq. 11) as one pass over the edges:
//   forward:  Y[h] = w[h] * sum_{k in row h} R[rel[k]] (*) X[col[k]]
//   backward: dX[t] = sum_{k in column t} w[head[k]] * R[rel[k]] (*) dY[head[k]]
//             dR[r] = sum_{k of relation r} w[head[k]] * X[col[k]] (*) dY[head[k]]
// (*) is the element-wise product, w[h] = 1 / (h's kept edges); rows are CSR over a
// batch's kept edges (select_edges). No (edges, d) or (groups, d) tensor is built.
//
// Message dropout + row L2 normalisation (recbole_kgin/model/dropout.py) in one pass:
//   z = x * keep, out = z / max(|z|, eps), keep[j] = lanes[j] >= threshold.
//
// Threads: at::parallel_for over fixed row ranges, built with -fopenmp: the loader
// binds it to the libgomp.so.1 torch already loaded, so these kernels run on torch's
// thread pool at torch's thread count (which recbole-kgin's governor sets); a second
// pool would spin beside torch's. Results do not depend on the thread count.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kEdgesPerChunk = 16384;
constexpr int64_t kPrefetchAhead = 8;  // edges: their rows are fetched while earlier ones are summed

// Asks for the cache lines of a row of d values (gathers are bound by memory latency).
template <typename scalar_t>
inline void prefetch_row(const scalar_t* row, int64_t d) {
  for (int64_t offset = 0; offset < d * static_cast<int64_t>(sizeof(scalar_t)); offset += 64) {
    __builtin_prefetch(reinterpret_cast<const char*>(row) + offset);
  }
}
constexpr int64_t kMaxChunks = 64;

// Row ranges ("chunks") of about equal edge counts. Their number depends on the edge
// count only, never on the thread count, so per-chunk partial sums (dR) add up in the
// same order at any thread count: results do not depend on how many threads ran.
std::vector<int64_t> chunk_bounds(const int64_t* crow, int64_t n_rows) {
  const int64_t n_edges = crow[n_rows];
  const int64_t chunks = std::max<int64_t>(1, std::min({kMaxChunks, n_edges / kEdgesPerChunk + 1, n_rows}));
  std::vector<int64_t> bounds(chunks + 1, n_rows);
  bounds[0] = 0;
  for (int64_t c = 1; c < chunks; ++c) {
    bounds[c] = std::lower_bound(crow, crow + n_rows + 1, n_edges * c / chunks) - crow;
    bounds[c] = std::max(bounds[c], bounds[c - 1]);
  }
  return bounds;
}

// Calls body(chunk, row_begin, row_end) for every chunk, chunks spread over torch's
// intra-op threads (at::parallel_for: the same OpenMP pool as torch's own ops).
template <typename Body>
void parallel_chunks(const std::vector<int64_t>& bounds, Body body) {
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) body(c, bounds[c], bounds[c + 1]);
  });
}

void check(const torch::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), name, " must be a contiguous CPU tensor");
}

}  // namespace

// A batch's kept edges both ways, from the graph's edges (CSR by head: crow, col,
// rel; by tail: crow_t, head_t, rel_t, perm_t = each entry's edge number) and keep
// (uint8 per edge; empty = all kept). Returns
//   by head: crow (N + 1), col, rel (int32), inv_degree (N, float32: 1 / max(kept, 1));
//   by tail: crow_t (N + 1), head_t, rel_t (int32), items_end_t (N): where tail t's
//   entries with an item head (head < n_items) end. Entries keep their order, and
//   within a tail heads ascend, so those come first: the last hop (into items) walks
//   [crow_t[t], items_end_t[t]) and needs no structure of its own.
// Node dropout drops about half the edges; the hops then walk the kept ones only: no
// unpredictable skip, no row fetched for a dropped edge.
std::vector<torch::Tensor> select_edges(torch::Tensor crow, torch::Tensor col, torch::Tensor rel, torch::Tensor crow_t,
                                        torch::Tensor head_t, torch::Tensor rel_t, torch::Tensor perm_t,
                                        torch::Tensor keep, int64_t n_items) {
  for (auto* t : {&crow, &col, &rel, &crow_t, &head_t, &rel_t, &perm_t, &keep}) check(*t, "argument");
  TORCH_CHECK(keep.numel() == 0 || (keep.scalar_type() == torch::kUInt8 && keep.numel() == col.numel()),
              "keep must be uint8 with one entry per edge (or empty)");
  const int64_t n = crow.size(0) - 1;
  const bool all = keep.numel() == 0;
  const uint8_t* kp = all ? nullptr : keep.data_ptr<uint8_t>();
  const int64_t* cp = crow.data_ptr<int64_t>();
  const int64_t* cpt = crow_t.data_ptr<int64_t>();
  const int32_t* cl = col.data_ptr<int32_t>();
  const int32_t* rl = rel.data_ptr<int32_t>();
  const int32_t* hd = head_t.data_ptr<int32_t>();
  const int32_t* rlt = rel_t.data_ptr<int32_t>();
  const int32_t* pm = perm_t.data_ptr<int32_t>();
  auto index = crow.options();
  auto new_crow = torch::empty({n + 1}, index), new_crow_t = torch::empty({n + 1}, index);
  auto items_end_t = torch::empty({n}, index);
  auto inv_degree = torch::empty({n}, crow.options().dtype(torch::kFloat32));
  int64_t* ncp = new_crow.data_ptr<int64_t>();
  int64_t* ncpt = new_crow_t.data_ptr<int64_t>();
  int64_t* item_end = items_end_t.data_ptr<int64_t>();
  float* inv = inv_degree.data_ptr<float>();
  const auto bounds = chunk_bounds(cp, n), bounds_t = chunk_bounds(cpt, n);
  // counts: kept edges per head, kept entries (and those with item heads) per tail
  ncp[0] = ncpt[0] = 0;
  parallel_chunks(bounds, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; ++h) {
      int64_t count = 0;
      for (int64_t k = cp[h]; k < cp[h + 1]; ++k) count += all ? 1 : kp[k];
      ncp[h + 1] = count;
      inv[h] = 1.0f / static_cast<float>(std::max<int64_t>(count, 1));
    }
  });
  parallel_chunks(bounds_t, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t count = 0, items = 0;
      for (int64_t k = cpt[t]; k < cpt[t + 1]; ++k) {
        const int64_t kept = all ? 1 : kp[pm[k]];
        count += kept;
        items += kept & static_cast<int64_t>(hd[k] < n_items);
      }
      ncpt[t + 1] = count;
      item_end[t] = items;
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    ncp[i + 1] += ncp[i];
    ncpt[i + 1] += ncpt[i];
    item_end[i] += ncpt[i];
  }
  // entries: one spare slot per chunk at the end takes the chunk's dropped ones, so the
  // write is a select, not a branch on random keep bits
  auto compact = [&](const std::vector<int64_t>& chunk_rows, const int64_t* old_ptr, const int64_t* new_ptr,
                     const int32_t* first, const int32_t* second, const int32_t* positions) {
    const int64_t total = new_ptr[n], chunks = static_cast<int64_t>(chunk_rows.size()) - 1;
    auto a = torch::empty({total + chunks}, col.options()), b = torch::empty({total + chunks}, col.options());
    int32_t* pa = a.data_ptr<int32_t>();
    int32_t* pb = b.data_ptr<int32_t>();
    parallel_chunks(chunk_rows, [&](int64_t chunk, int64_t begin, int64_t end) {
      const int64_t spare = total + chunk;
      for (int64_t row = begin; row < end; ++row) {
        int64_t out = new_ptr[row];
        for (int64_t k = old_ptr[row]; k < old_ptr[row + 1]; ++k) {
          const bool kept = all || kp[positions ? positions[k] : k];
          const int64_t slot = kept ? out : spare;
          pa[slot] = first[k];
          pb[slot] = second[k];
          out += kept;
        }
      }
    });
    return std::make_pair(a.narrow(0, 0, total), b.narrow(0, 0, total));
  };
  auto by_head = compact(bounds, cp, ncp, cl, rl, nullptr);
  auto by_tail = compact(bounds_t, cpt, ncpt, hd, rlt, pm);
  return {new_crow, by_head.first, by_head.second, inv_degree, new_crow_t, by_tail.first, by_tail.second, items_end_t};
}

// One head's row of the forward, Y[h] = scale * sum_k R[rel[k]] (*) X[col[k]], summed in
// a local row (D > 0: d = D known at compile time, so the row stays in registers).
template <typename scalar_t, int D>
inline void forward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ r, const int32_t* __restrict__ cl,
                        const int32_t* __restrict__ rl, int64_t begin, int64_t end, int64_t n_edges, scalar_t scale,
                        int64_t d_runtime, scalar_t* __restrict__ out) {
  const int64_t d = D > 0 ? D : d_runtime;
  scalar_t acc[D > 0 ? D : 1];
  scalar_t* __restrict__ sum = D > 0 ? acc : out;
  for (int64_t j = 0; j < d; ++j) sum[j] = 0;
  for (int64_t k = begin; k < end; ++k) {
    if (k + kPrefetchAhead < n_edges) prefetch_row(x + static_cast<int64_t>(cl[k + kPrefetchAhead]) * d, d);
    const scalar_t* __restrict__ xt = x + static_cast<int64_t>(cl[k]) * d;
    const scalar_t* __restrict__ rr = r + static_cast<int64_t>(rl[k]) * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) sum[j] += rr[j] * xt[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) out[j] = sum[j] * scale;
}

// Y[h] = inv_degree[h] * sum_{k in row h} R[rel[k]] (*) X[col[k]] for the first n_rows heads.
torch::Tensor relational_forward(torch::Tensor X, torch::Tensor R, torch::Tensor crow, torch::Tensor col, torch::Tensor rel,
                                 torch::Tensor inv_degree, int64_t n_rows) {
  for (auto* t : {&X, &R, &crow, &col, &rel, &inv_degree}) check(*t, "argument");
  TORCH_CHECK(n_rows < crow.size(0), "n_rows exceeds the graph's heads");
  const int64_t d = X.size(1), n_edges = crow.data_ptr<int64_t>()[n_rows];
  auto Y = torch::empty({n_rows, d}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "relational_mean_forward", [&] {
    const scalar_t* x = X.data_ptr<scalar_t>();
    const scalar_t* r = R.data_ptr<scalar_t>();
    const float* inv = inv_degree.data_ptr<float>();
    const int64_t* cp = crow.data_ptr<int64_t>();
    const int32_t* cl = col.data_ptr<int32_t>();
    const int32_t* rl = rel.data_ptr<int32_t>();
    scalar_t* y = Y.data_ptr<scalar_t>();
    parallel_chunks(chunk_bounds(cp, n_rows), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        const scalar_t scale = static_cast<scalar_t>(inv[h]);
        if (d == 64) {
          forward_row<scalar_t, 64>(x, r, cl, rl, cp[h], cp[h + 1], n_edges, scale, d, y + h * d);
        } else {
          forward_row<scalar_t, 0>(x, r, cl, rl, cp[h], cp[h + 1], n_edges, scale, d, y + h * d);
        }
      }
    });
  });
  return Y;
}

// One tail's row of the backward: dX[t] = seed + sum_k w[head] R[rel] (*) dY[head], summed
// in a local row (D > 0: in registers), and dR[rel] += w[head] X[t] (*) dY[head].
template <typename scalar_t, int D>
inline void backward_row(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ xt, const scalar_t* __restrict__ r,
                         const float* __restrict__ inv, const int32_t* __restrict__ heads, const int32_t* __restrict__ rl,
                         int64_t begin, int64_t end, int64_t n_entries, const scalar_t* __restrict__ seed_row,
                         int64_t d_runtime, scalar_t* __restrict__ gxt, scalar_t* __restrict__ gr) {
  const int64_t d = D > 0 ? D : d_runtime;
  scalar_t acc[D > 0 ? D : 1];
  scalar_t* __restrict__ sum = D > 0 ? acc : gxt;
  for (int64_t j = 0; j < d; ++j) sum[j] = seed_row ? seed_row[j] : scalar_t(0);
  for (int64_t k = begin; k < end; ++k) {
    // (a prefetch never faults: past end it may name a row beyond dY, harmlessly)
    if (k + kPrefetchAhead < n_entries) prefetch_row(gy + static_cast<int64_t>(heads[k + kPrefetchAhead]) * d, d);
    const int64_t head = heads[k];
    const scalar_t wk = static_cast<scalar_t>(inv[head]);
    const scalar_t* __restrict__ g = gy + head * d;
    const scalar_t* __restrict__ rr = r + static_cast<int64_t>(rl[k]) * d;
    scalar_t* __restrict__ grr = gr + static_cast<int64_t>(rl[k]) * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      sum[j] += wk * rr[j] * g[j];
      grr[j] += wk * xt[j] * g[j];
    }
  }
  if (D > 0) std::copy(sum, sum + d, gxt);
}

// By tail: tail t's entries are [crow_t[t], ends[t]) (ends = crow_t[1:] for all heads,
// items_end_t for the last hop), each with its head and relation.
// dX starts from `seed` in its first seed.size(0) rows (the gradient of the items'
// rows of X read elsewhere; autograd would otherwise add a zero-filled (N, d) copy).
std::vector<torch::Tensor> relational_backward(torch::Tensor dY, torch::Tensor X, torch::Tensor R, torch::Tensor crow_t,
                                               torch::Tensor ends, torch::Tensor head_t, torch::Tensor rel_t,
                                               torch::Tensor inv_degree, torch::Tensor seed) {
  for (auto* t : {&dY, &X, &R, &crow_t, &ends, &head_t, &rel_t, &inv_degree, &seed}) check(*t, "argument");
  const int64_t n_tails = X.size(0), d = X.size(1), n_relations = R.size(0), n_entries = head_t.size(0);
  const int64_t n_seeded = seed.size(0);
  TORCH_CHECK(n_seeded <= n_tails && (n_seeded == 0 || seed.size(1) == d), "seed must be (rows <= tails, d)");
  auto dX = torch::empty_like(X);
  const auto bounds = chunk_bounds(crow_t.data_ptr<int64_t>(), n_tails);
  auto dR_parts = torch::zeros({static_cast<int64_t>(bounds.size()) - 1, n_relations, d}, R.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "relational_mean_backward", [&] {
    const scalar_t* __restrict__ gy = dY.data_ptr<scalar_t>();
    const scalar_t* __restrict__ x = X.data_ptr<scalar_t>();
    const scalar_t* __restrict__ r = R.data_ptr<scalar_t>();
    const float* inv = inv_degree.data_ptr<float>();
    const int64_t* cp = crow_t.data_ptr<int64_t>();
    const int64_t* stop = ends.data_ptr<int64_t>();
    const int32_t* heads = head_t.data_ptr<int32_t>();
    const int32_t* rl = rel_t.data_ptr<int32_t>();
    const scalar_t* seeds = n_seeded ? seed.data_ptr<scalar_t>() : nullptr;
    scalar_t* gx = dX.data_ptr<scalar_t>();
    scalar_t* gr_parts = dR_parts.data_ptr<scalar_t>();
    parallel_chunks(bounds, [&](int64_t chunk, int64_t begin, int64_t end) {
      scalar_t* gr = gr_parts + chunk * n_relations * d;
      for (int64_t t = begin; t < end; ++t) {
        const scalar_t* seed_row = t < n_seeded ? seeds + t * d : nullptr;
        if (d == 64) {
          backward_row<scalar_t, 64>(gy, x + t * d, r, inv, heads, rl, cp[t], stop[t], n_entries, seed_row, d, gx + t * d, gr);
        } else {
          backward_row<scalar_t, 0>(gy, x + t * d, r, inv, heads, rl, cp[t], stop[t], n_entries, seed_row, d, gx + t * d, gr);
        }
      }
    });
  });
  return {dX, dR_parts.sum(0)};
}

// 1 where lane >= cut, else 0, as arithmetic: a comparison here compiles to a branch
// that random lanes mispredict half the time (5x slower than this, measured).
template <typename scalar_t>
inline scalar_t kept(int16_t lane, int32_t cut) {
  return static_cast<scalar_t>(1 + ((static_cast<int32_t>(lane) - cut) >> 31));
}

// Random words for the dropout masks (recbole_kgin/model/dropout.py), a counter-based
// generator: word i = mix(mix(i + k1) ^ (k2 + high(i) * golden)), mix Wellons' lowbias32
// hash (a bijection of 32-bit words), k1 and k2 from a 64-bit seed. Every word is a
// function of (seed, i) alone, so the result does not depend on the thread count, and
// the loop has no dependence between words (measured at one thread: 0.36 ms for 1.5M
// 16-bit lanes, torch's 64-bit draws 1.28 ms).
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

torch::Tensor random_words(int64_t n, int64_t seed) {
  TORCH_CHECK(n >= 0, "random_words: n must be >= 0");
  auto words = torch::empty({n}, torch::dtype(torch::kInt32));
  uint32_t* w = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t k1 = mix32(static_cast<uint32_t>(s)), k2 = mix32(static_cast<uint32_t>(s >> 32) ^ 0x9e3779b9U);
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end;) {  // blocks within which high(i) is constant
      const int64_t block_end = std::min<int64_t>(end, ((block >> 32) + 1) << 32);
      const uint32_t high = k2 + static_cast<uint32_t>(static_cast<uint64_t>(block) >> 32) * 0x9e3779b9U;
      const uint32_t first = static_cast<uint32_t>(block) + k1;
      uint32_t* __restrict__ out = w + block;
      const int64_t count = block_end - block;
#pragma omp simd
      for (int64_t j = 0; j < count; ++j) out[j] = mix32(mix32(first + static_cast<uint32_t>(j)) ^ high);
      block = block_end;
    }
  });
  return words;
}

// Row ranges for row-wise kernels: chunks of equal row counts (their number follows
// the size only).
std::vector<int64_t> row_chunks(int64_t n_rows, int64_t d) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, n_rows * d / (8 * kEdgesPerChunk) + 1));
  std::vector<int64_t> bounds(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) bounds[c] = n_rows * c / chunks;
  return bounds;
}

// Row sums over 64-wide rows: kLanes partial sums (one vector register of floats),
// folded by halves at the end. `omp simd reduction` vectorised the loop but left its
// final adds serial through the stack, which dominated rows this short (the user side's
// forward of a lastfm batch: 484 us that way, 375 us this way).
constexpr int kLanes = 16;  // fold() below is written for 16

template <typename scalar_t>
inline scalar_t fold(scalar_t* part) {
  // constant trip counts: unrolled and vectorised (a loop over the width stayed scalar)
  for (int t = 0; t < 8; ++t) part[t] += part[t + 8];
  for (int t = 0; t < 4; ++t) part[t] += part[t + 4];
  for (int t = 0; t < 2; ++t) part[t] += part[t + 2];
  return part[0] + part[1];
}

// sum_j a[j] * b[j]
template <typename scalar_t>
inline scalar_t dot_row(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t d) {
  scalar_t part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
#pragma omp simd
    for (int t = 0; t < kLanes; ++t) part[t] += a[j + t] * b[j + t];
  }
  scalar_t rest = 0;
  for (; j < d; ++j) rest += a[j] * b[j];
  return fold(part) + rest;
}

// One row of message dropout + normalisation: out = z / max(|z|, eps), z = x * keep;
// returns the denominator. Written outside AT_DISPATCH: GCC drops a _Pragma inside
// a macro's arguments, and without `omp simd` the float sum runs one lane at a time
// (measured: 3.4 ms instead of 1.1 ms for a 34k x 64 table).
template <typename scalar_t>
inline scalar_t dropout_normalize_row(const scalar_t* __restrict__ x, const int16_t* __restrict__ lane, int32_t cut,
                                      scalar_t eps, int64_t d, scalar_t* __restrict__ out) {
  scalar_t part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
#pragma omp simd
    for (int t = 0; t < kLanes; ++t) {
      const scalar_t z = x[j + t] * kept<scalar_t>(lane[j + t], cut);
      out[j + t] = z;
      part[t] += z * z;
    }
  }
  scalar_t rest = 0;
  for (; j < d; ++j) {
    const scalar_t z = x[j] * kept<scalar_t>(lane[j], cut);
    out[j] = z;
    rest += z * z;
  }
  const scalar_t squares = fold(part) + rest;
  const scalar_t denominator = std::max(std::sqrt(squares), eps);
  const scalar_t inverse = scalar_t(1) / denominator;
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) out[j] *= inverse;
  return denominator;
}

// Its backward for one row: grad = keep * (g - out * <out, g>) / den, the projection
// left out where |z| <= eps (the clamp's gradient is 0 there).
template <typename scalar_t>
inline void dropout_normalize_row_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ out,
                                           const int16_t* __restrict__ lane, int32_t cut, scalar_t denominator,
                                           scalar_t eps, int64_t d, scalar_t* __restrict__ grad) {
  const scalar_t projection = denominator > eps ? dot_row(out, g, d) : scalar_t(0);
  const scalar_t inverse = scalar_t(1) / denominator;
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) grad[j] = (g[j] - out[j] * projection) * inverse * kept<scalar_t>(lane[j], cut);
}

// out = z / max(|z|, eps) row-wise, z = x * (lanes >= threshold); returns (out, denominators).
std::vector<torch::Tensor> dropout_normalize_forward(torch::Tensor X, torch::Tensor lanes, int64_t threshold,
                                                     double eps) {
  check(X, "x");
  check(lanes, "lanes");
  const int64_t n = X.size(0), d = X.size(1);
  auto out = torch::empty_like(X);
  auto denominators = torch::empty({n}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "dropout_normalize_forward", [&] {
    const scalar_t* x = X.data_ptr<scalar_t>();
    const int16_t* lane = lanes.data_ptr<int16_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* den = denominators.data_ptr<scalar_t>();
    const int32_t cut = static_cast<int32_t>(threshold);
    parallel_chunks(row_chunks(n, d), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        den[i] = dropout_normalize_row<scalar_t>(x + i * d, lane + i * d, cut, static_cast<scalar_t>(eps), d, o + i * d);
      }
    });
  });
  return {out, denominators};
}

torch::Tensor dropout_normalize_backward(torch::Tensor grad_out, torch::Tensor out, torch::Tensor lanes,
                                         int64_t threshold, torch::Tensor denominators, double eps) {
  check(grad_out, "grad");
  check(out, "out");
  const int64_t n = out.size(0), d = out.size(1);
  auto grad = torch::empty_like(out);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dropout_normalize_backward", [&] {
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    const scalar_t* o = out.data_ptr<scalar_t>();
    const int16_t* lane = lanes.data_ptr<int16_t>();
    const scalar_t* den = denominators.data_ptr<scalar_t>();
    scalar_t* result = grad.data_ptr<scalar_t>();
    const int32_t cut = static_cast<int32_t>(threshold);
    parallel_chunks(row_chunks(n, d), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        dropout_normalize_row_backward<scalar_t>(g + i * d, o + i * d, lane + i * d, cut, den[i],
                                                 static_cast<scalar_t>(eps), d, result + i * d);
      }
    });
  });
  return grad;
}

// KGIN's user side over all hops (paper Eq. 7-8 as the authors' code has it), per batch
// user u, hop l = 1..L, from e_u^(0) = user0[u]:
//   m_u = sum_{k in row u} value[k] items_l[col[k]]                 (mean over kept items)
//   beta_u = softmax_p(e_u^(l-1) . Z_p)                              (latent attention)
//   e_u^(l) = normalize(dropout(m_u (*) (sum_p beta_up I_p + self)))   (self: 1 or 0)
//   user_sum[u] = e_u^(0) + sum_l e_u^(l)
// Rows are independent: each chunk of users runs all hops in one call (forward hop by
// hop over the chunk, backward user by user), in place of about twenty small tensor
// operations per hop each way. lanes: one (B, d) int16 tensor per hop, or none (no
// message dropout). user_side_forward returns user_sum (B, d) and what the backward
// reads: users (L + 1, B, d) = e^(0..L), means (L, B, d), betas (L, B, P), denominators (L, B).

// Row helpers of the user side, each a plain function over restrict pointers (the same
// loops written inline in the chunk lambda compiled to scalar code: the forward of a lastfm
// batch took 830 us that way, 485 us this way).
// out += w * x
template <typename scalar_t>
inline void axpy_row(scalar_t* __restrict__ out, scalar_t w, const scalar_t* __restrict__ x, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) out[j] += w * x[j];
}

// softmax of P logits, in place
template <typename scalar_t>
inline void softmax_row(scalar_t* logits, int64_t P) {
  scalar_t largest = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t p = 0; p < P; ++p) largest = std::max(largest, logits[p]);
  scalar_t norm = 0;
  for (int64_t p = 0; p < P; ++p) norm += (logits[p] = std::exp(logits[p] - largest));
  for (int64_t p = 0; p < P; ++p) logits[p] /= norm;
}

// mixed = self + sum_p beta_p I_p
template <typename scalar_t>
inline void mix_intents(scalar_t* __restrict__ mixed, const scalar_t* __restrict__ beta,
                        const scalar_t* __restrict__ intents, int64_t P, int64_t d, bool self_connection) {
  std::fill(mixed, mixed + d, self_connection ? scalar_t(1) : scalar_t(0));
  for (int64_t p = 0; p < P; ++p) axpy_row(mixed, beta[p], intents + p * d, d);
}

// m = sum_k w[k] items[col[k]] over one user's kept items, summed in a local row (D > 0:
// in registers), the next rows prefetched (gathers wait on memory).
template <typename scalar_t, int D>
inline void mean_row(const int64_t* __restrict__ cl, const float* __restrict__ w, int64_t begin, int64_t end,
                     const scalar_t* __restrict__ items, int64_t d_runtime, scalar_t* __restrict__ m) {
  const int64_t d = D > 0 ? D : d_runtime;
  scalar_t acc[D > 0 ? D : 1];
  scalar_t* __restrict__ sum = D > 0 ? acc : m;
  for (int64_t j = 0; j < d; ++j) sum[j] = 0;
  for (int64_t k = begin; k < end; ++k) {
    if (k + kPrefetchAhead < end) prefetch_row(items + cl[k + kPrefetchAhead] * d, d);
    const scalar_t weight = static_cast<scalar_t>(w[k]);
    const scalar_t* __restrict__ item = items + cl[k] * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) sum[j] += weight * item[j];
  }
  if (D > 0) std::copy(sum, sum + d, m);
}

// Hop l of one user, forward: reads e^(l-1) from users, writes e^(l), the mean, beta and
// the denominator, and adds e^(l) into sum.
template <typename scalar_t>
inline void user_forward_hop(int64_t u, int64_t l, int64_t B, int64_t d, int64_t P, const int64_t* __restrict__ cp,
                             const int64_t* __restrict__ cl, const float* __restrict__ w,
                             const scalar_t* __restrict__ items, const scalar_t* __restrict__ z,
                             const scalar_t* __restrict__ intents, const int16_t* __restrict__ lane, int32_t cut,
                             scalar_t eps, bool self_connection, scalar_t* __restrict__ mixed,
                             scalar_t* __restrict__ next, scalar_t* us, scalar_t* ms, scalar_t* bs, scalar_t* ds,
                             scalar_t* __restrict__ sum) {
  const scalar_t* previous = us + (l * B + u) * d;
  scalar_t* m = ms + (l * B + u) * d;
  if (d == 64) {
    mean_row<scalar_t, 64>(cl, w, cp[u], cp[u + 1], items, d, m);
  } else {
    mean_row<scalar_t, 0>(cl, w, cp[u], cp[u + 1], items, d, m);
  }
  scalar_t* beta = bs + (l * B + u) * P;
  for (int64_t p = 0; p < P; ++p) beta[p] = dot_row(previous, z + p * d, d);
  softmax_row(beta, P);
  mix_intents(mixed, beta, intents, P, d, self_connection);
  for (int64_t j = 0; j < d; ++j) next[j] = m[j] * mixed[j];
  scalar_t* out = us + ((l + 1) * B + u) * d;
  ds[l * B + u] = dropout_normalize_row<scalar_t>(next, lane, cut, eps, d, out);
  axpy_row(sum, scalar_t(1), out, d);
}

// The forward's rows (outside AT_DISPATCH: GCC drops a pragma inside a macro's arguments).
template <typename scalar_t>
void user_side_forward_rows(const std::vector<torch::Tensor>& items, const torch::Tensor& crow, const torch::Tensor& col,
                            const torch::Tensor& values, const torch::Tensor& latent, const torch::Tensor& intents,
                            const std::vector<torch::Tensor>& lanes, int32_t cut, double eps, bool self_connection,
                            torch::Tensor& users, torch::Tensor& means, torch::Tensor& betas,
                            torch::Tensor& denominators, torch::Tensor& user_sum) {
  const int64_t L = static_cast<int64_t>(items.size()), B = user_sum.size(0), d = user_sum.size(1), P = latent.size(0);
  std::vector<const scalar_t*> item_rows;
  std::vector<const int16_t*> lane_rows;
  for (auto& t : items) item_rows.push_back(t.data_ptr<scalar_t>());
  for (auto& t : lanes) lane_rows.push_back(t.data_ptr<int16_t>());
  const int64_t* cp = crow.data_ptr<int64_t>();
  const int64_t* cl = col.data_ptr<int64_t>();
  const float* w = values.data_ptr<float>();
  const scalar_t* z = latent.data_ptr<scalar_t>();
  const scalar_t* in = intents.data_ptr<scalar_t>();
  scalar_t* us = users.data_ptr<scalar_t>();
  scalar_t* ms = means.data_ptr<scalar_t>();
  scalar_t* bs = betas.data_ptr<scalar_t>();
  scalar_t* ds = denominators.data_ptr<scalar_t>();
  scalar_t* total = user_sum.data_ptr<scalar_t>();
  parallel_chunks(row_chunks(B, d * (L + 1)), [&](int64_t, int64_t begin, int64_t end) {
    std::vector<scalar_t> mixed(d), next(d);
    std::vector<int16_t> all_kept(d, 0);
    // hop by hop over the chunk's users: one hop's item table at a time stays in cache
    for (int64_t u = begin; u < end; ++u) std::copy(us + u * d, us + (u + 1) * d, total + u * d);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t u = begin; u < end; ++u) {
        const int16_t* lane = lane_rows.empty() ? all_kept.data() : lane_rows[l] + u * d;
        user_forward_hop<scalar_t>(u, l, B, d, P, cp, cl, w, item_rows[l], z, in, lane, cut, static_cast<scalar_t>(eps),
                                   self_connection, mixed.data(), next.data(), us, ms, bs, ds, total + u * d);
      }
    }
  });
}

std::vector<torch::Tensor> user_side_forward(torch::Tensor user0, std::vector<torch::Tensor> items, torch::Tensor crow,
                                             torch::Tensor col, torch::Tensor values, torch::Tensor latent,
                                             torch::Tensor intents, std::vector<torch::Tensor> lanes, int64_t threshold,
                                             double eps, bool self_connection) {
  for (auto* t : {&user0, &crow, &col, &values, &latent, &intents}) check(*t, "argument");
  const int64_t L = static_cast<int64_t>(items.size()), B = user0.size(0), d = user0.size(1), P = latent.size(0);
  TORCH_CHECK(lanes.empty() || static_cast<int64_t>(lanes.size()) == L, "lanes: one tensor per hop, or none");
  for (auto& t : items) check(t, "items");
  for (auto& t : lanes) check(t, "lanes");
  TORCH_CHECK(values.scalar_type() == torch::kFloat32 && crow.scalar_type() == torch::kInt64,
              "values must be float32, crow and col int64");
  TORCH_CHECK(crow.size(0) == B + 1 && values.numel() == col.numel(), "crow must be (B + 1), values one per col");
  TORCH_CHECK(latent.dim() == 2 && latent.size(1) == d && intents.dim() == 2 && intents.size(0) == P &&
                  intents.size(1) == d,
              "latent and intents must be (P, d)");
  for (auto& t : items) TORCH_CHECK(t.dim() == 2 && t.size(1) == d, "items must be (n_items, d)");
  for (auto& t : lanes) TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == d, "lanes must be (B, d)");
  auto users = torch::empty({L + 1, B, d}, user0.options());
  auto means = torch::empty({L, B, d}, user0.options());
  auto betas = torch::empty({L, B, P}, user0.options());
  auto denominators = torch::empty({L, B}, user0.options());
  auto user_sum = torch::empty({B, d}, user0.options());
  users[0].copy_(user0);
  const int32_t cut = lanes.empty() ? -32768 : static_cast<int32_t>(threshold);
  AT_DISPATCH_FLOATING_TYPES(user0.scalar_type(), "user_side_forward", [&] {
    user_side_forward_rows<scalar_t>(items, crow, col, values, latent, intents, lanes, cut, eps, self_connection, users,
                                     means, betas, denominators, user_sum);
  });
  return {user_sum, users, means, betas, denominators};
}

// Its backward from grad_sum (B, d): the gradients of user0 (B, d), of each hop's items
// (L, n_items, d; through the transposed pattern crow_t, col_t, perm_t), of the latent
// table Z and of the intents (P, d; per-chunk partial sums added in chunk order).
// One user's hops, backward (hop L down to 1): the gradient of e^(0) into gu, of each
// hop's mean into gm, and the user's share of dZ and dI added into gz and gi.
template <typename scalar_t>
inline void user_backward_row(int64_t u, int64_t L, int64_t B, int64_t d, int64_t P, const scalar_t* __restrict__ gs,
                              const scalar_t* us, const scalar_t* ms, const scalar_t* bs, const scalar_t* ds,
                              const std::vector<const int16_t*>& lane_rows, const int16_t* all_kept, int32_t cut,
                              scalar_t eps, const scalar_t* __restrict__ z, const scalar_t* __restrict__ intents,
                              bool self_connection, scalar_t* __restrict__ g, scalar_t* __restrict__ g_next,
                              scalar_t* __restrict__ h, scalar_t* __restrict__ mixed, scalar_t* __restrict__ g_beta,
                              scalar_t* __restrict__ gu, scalar_t* gm, scalar_t* __restrict__ gz,
                              scalar_t* __restrict__ gi) {
  std::copy(gs + u * d, gs + (u + 1) * d, g);  // by e^(L): from the sum only
  for (int64_t l = L - 1; l >= 0; --l) {
    const scalar_t* out = us + ((l + 1) * B + u) * d;
    const scalar_t* previous = us + (l * B + u) * d;
    const scalar_t* m = ms + (l * B + u) * d;
    const scalar_t* beta = bs + (l * B + u) * P;
    const int16_t* lane = lane_rows.empty() ? all_kept : lane_rows[l] + u * d;
    dropout_normalize_row_backward<scalar_t>(g, out, lane, cut, ds[l * B + u], eps, d, g_next);
    mix_intents(mixed, beta, intents, P, d, self_connection);
    scalar_t* gmean = gm + (l * B + u) * d;
    for (int64_t j = 0; j < d; ++j) {
      gmean[j] = g_next[j] * mixed[j];
      h[j] = g_next[j] * m[j];
    }
    scalar_t weighted = 0;
    for (int64_t p = 0; p < P; ++p) {
      g_beta[p] = dot_row(h, intents + p * d, d);
      weighted += beta[p] * g_beta[p];
      axpy_row(gi + p * d, beta[p], h, d);
    }
    // by e^(l-1): from the sum, and through the softmax's logits e^(l-1) . Z_p
    std::copy(gs + u * d, gs + (u + 1) * d, g);
    for (int64_t p = 0; p < P; ++p) {
      const scalar_t g_logit = beta[p] * (g_beta[p] - weighted);
      axpy_row(gz + p * d, g_logit, previous, d);
      axpy_row(g, g_logit, z + p * d, d);
    }
  }
  std::copy(g, g + d, gu + u * d);
}

// The backward's rows (outside AT_DISPATCH, as above).
template <typename scalar_t>
void user_side_backward_rows(const torch::Tensor& grad_sum, const torch::Tensor& users, const torch::Tensor& means,
                             const torch::Tensor& betas, const torch::Tensor& denominators,
                             const std::vector<torch::Tensor>& lanes, int32_t cut, double eps,
                             const torch::Tensor& crow_t, const torch::Tensor& col_t, const torch::Tensor& perm_t,
                             const torch::Tensor& values, int64_t n_items, const torch::Tensor& latent,
                             const torch::Tensor& intents, bool self_connection, const std::vector<int64_t>& bounds,
                             torch::Tensor& grad_user, torch::Tensor& grad_means, torch::Tensor& latent_parts,
                             torch::Tensor& intent_parts, torch::Tensor& grad_items) {
  const int64_t L = means.size(0), B = grad_sum.size(0), d = grad_sum.size(1), P = latent.size(0);
  const scalar_t* gs = grad_sum.data_ptr<scalar_t>();
  const scalar_t* us = users.data_ptr<scalar_t>();
  const scalar_t* ms = means.data_ptr<scalar_t>();
  const scalar_t* bs = betas.data_ptr<scalar_t>();
  const scalar_t* ds = denominators.data_ptr<scalar_t>();
  const scalar_t* z = latent.data_ptr<scalar_t>();
  const scalar_t* in = intents.data_ptr<scalar_t>();
  std::vector<const int16_t*> lane_rows;
  for (auto& t : lanes) lane_rows.push_back(t.data_ptr<int16_t>());
  scalar_t* gu = grad_user.data_ptr<scalar_t>();
  scalar_t* gm = grad_means.data_ptr<scalar_t>();
  scalar_t* gz_parts = latent_parts.data_ptr<scalar_t>();
  scalar_t* gi_parts = intent_parts.data_ptr<scalar_t>();
  parallel_chunks(bounds, [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<scalar_t> g(d), g_next(d), h(d), mixed(d), g_beta(P);
    std::vector<int16_t> all_kept(d, 0);
    for (int64_t u = begin; u < end; ++u) {
      user_backward_row<scalar_t>(u, L, B, d, P, gs, us, ms, bs, ds, lane_rows, all_kept.data(), cut,
                                  static_cast<scalar_t>(eps), z, in, self_connection, g.data(), g_next.data(), h.data(),
                                  mixed.data(), g_beta.data(), gu, gm, gz_parts + chunk * P * d,
                                  gi_parts + chunk * P * d);
    }
  });
  // by each hop's items: A^T gmean, item by item over the transposed pattern
  const int64_t* cpt = crow_t.data_ptr<int64_t>();
  const int64_t* clt = col_t.data_ptr<int64_t>();
  const int64_t* pm = perm_t.data_ptr<int64_t>();
  const float* w = values.data_ptr<float>();
  scalar_t* gitems = grad_items.data_ptr<scalar_t>();
  parallel_chunks(row_chunks(n_items, d * L), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t l = 0; l < L; ++l) {
      const scalar_t* gmean = gm + l * B * d;
      for (int64_t t = begin; t < end; ++t) {
        scalar_t* row = gitems + (l * n_items + t) * d;
        std::fill(row, row + d, scalar_t(0));
        for (int64_t k = cpt[t]; k < cpt[t + 1]; ++k) axpy_row(row, static_cast<scalar_t>(w[pm[k]]), gmean + clt[k] * d, d);
      }
    }
  });
}

std::vector<torch::Tensor> user_side_backward(torch::Tensor grad_sum, torch::Tensor users, torch::Tensor means,
                                              torch::Tensor betas, torch::Tensor denominators,
                                              std::vector<torch::Tensor> lanes, int64_t threshold, double eps,
                                              torch::Tensor crow_t, torch::Tensor col_t, torch::Tensor perm_t,
                                              torch::Tensor values, int64_t n_items, torch::Tensor latent,
                                              torch::Tensor intents, bool self_connection) {
  for (auto* t : {&grad_sum, &users, &means, &betas, &denominators, &crow_t, &col_t, &perm_t, &values, &latent, &intents})
    check(*t, "argument");
  for (auto& t : lanes) check(t, "lanes");
  const int64_t L = means.size(0), B = grad_sum.size(0), d = grad_sum.size(1), P = latent.size(0);
  TORCH_CHECK(crow_t.size(0) == n_items + 1 && perm_t.numel() == col_t.numel() && values.numel() == col_t.numel(),
              "crow_t must be (n_items + 1), perm_t and values one per col_t");
  TORCH_CHECK(users.size(0) == L + 1 && users.size(1) == B && betas.size(2) == P && intents.size(0) == P,
              "saved tensors do not match the gradient's shape");
  auto grad_user = torch::empty({B, d}, grad_sum.options());
  auto grad_means = torch::empty({L, B, d}, grad_sum.options());
  const auto bounds = row_chunks(B, d * (L + 1));
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  auto latent_parts = torch::zeros({chunks, P, d}, grad_sum.options());
  auto intent_parts = torch::zeros({chunks, P, d}, grad_sum.options());
  auto grad_items = torch::empty({L, n_items, d}, grad_sum.options());
  const int32_t cut = lanes.empty() ? -32768 : static_cast<int32_t>(threshold);
  AT_DISPATCH_FLOATING_TYPES(grad_sum.scalar_type(), "user_side_backward", [&] {
    user_side_backward_rows<scalar_t>(grad_sum, users, means, betas, denominators, lanes, cut, eps, crow_t, col_t, perm_t,
                                      values, n_items, latent, intents, self_connection, bounds, grad_user, grad_means,
                                      latent_parts, intent_parts, grad_items);
  });
  return {grad_user, grad_items, latent_parts.sum(0), intent_parts.sum(0)};
}

// KGIN's independence loss between intents (paper Eq. 4-5, the authors' formula):
//   D_p[i][j] = sqrt(max(x_i^2 - 2 x_i x_j + x_j^2, 0) + eps)      x = row p of V (P, n)
//   A_p = D_p double-centred, S[p][q] = sum(A_p (*) A_q) / n^2, dCov = sqrt(max(S, 0) + eps)
//   loss = sum_{p<q} dCov[p][q] / sqrt(dCov[p][p] dCov[q][q] + eps),   eps = 1e-8
// and its gradient by V, both in one call (float64 inside): about 30 small tensor
// operations each way on the torch path. The backward is the chain rule through each
// step; double centring is its own adjoint; max(., 0) passes the gradient where its
// input is >= 0, as torch's clamp does.
std::vector<torch::Tensor> distance_loss(torch::Tensor V) {
  check(V, "vectors");
  TORCH_CHECK(V.dim() == 2, "vectors must be (intents, n)");
  const int64_t P = V.size(0), n = V.size(1), nn = n * n;
  constexpr double eps = 1e-8;
  auto values = V.to(torch::kFloat64);
  const double* x = values.data_ptr<double>();
  const double n2 = static_cast<double>(nn);
  // A (P, n, n): centred distances; slope (P, n, n): d D / d s = 0.5 / D where s >= 0, else 0
  std::vector<double> A(P * nn), slope(P * nn), mean(n);
  for (int64_t p = 0; p < P; ++p) {
    const double* xp = x + p * n;
    double* Ap = A.data() + p * nn;
    double* slope_p = slope.data() + p * nn;
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double xi = xp[i];
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) {
        const double square = xi * xi - 2 * xi * xp[j] + xp[j] * xp[j];
        const double distance = std::sqrt((square > 0 ? square : 0.0) + eps);
        Ap[i * n + j] = distance;
        slope_p[i * n + j] = square >= 0 ? 0.5 / distance : 0.0;
        sum += distance;
      }
      mean[i] = sum / n;  // row means; D is symmetric, so its column means too
      total += sum;
    }
    total /= n2;
    for (int64_t i = 0; i < n; ++i) {
      const double shift = total - mean[i];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) Ap[i * n + j] += shift - mean[j];
    }
  }
  std::vector<double> S(P * P), dcov(P * P);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q = p; q < P; ++q) {
      const double* Ap = A.data() + p * nn;
      const double* Aq = A.data() + q * nn;
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t k = 0; k < nn; ++k) sum += Ap[k] * Aq[k];
      S[p * P + q] = S[q * P + p] = sum / n2;
      dcov[p * P + q] = dcov[q * P + p] = std::sqrt(std::max(sum / n2, 0.0) + eps);
    }
  double loss = 0;
  std::vector<double> grad_dcov(P * P, 0.0);  // by dCov[p][q], p <= q
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q = p + 1; q < P; ++q) {
      const double vp = dcov[p * P + p], vq = dcov[q * P + q], c = dcov[p * P + q];
      const double denominator = std::sqrt(vp * vq + eps);
      loss += c / denominator;
      grad_dcov[p * P + q] += 1.0 / denominator;
      const double by_product = -0.5 * c / (denominator * denominator * denominator);
      grad_dcov[p * P + p] += by_product * vq;
      grad_dcov[q * P + q] += by_product * vp;
    }
  // by S: the upper triangle and diagonal are the entries the loss reads
  std::vector<double> grad_S(P * P, 0.0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q = p; q < P; ++q)
      if (S[p * P + q] >= 0) grad_S[p * P + q] = grad_dcov[p * P + q] * 0.5 / dcov[p * P + q];
  auto grad = torch::zeros({P, n}, torch::kFloat64);
  double* gx = grad.data_ptr<double>();
  std::vector<double> gA(nn);
  for (int64_t p = 0; p < P; ++p) {
    std::fill(gA.begin(), gA.end(), 0.0);
    for (int64_t q = 0; q < P; ++q) {
      const double weight = grad_S[std::min(p, q) * P + std::max(p, q)] * (p == q ? 2.0 : 1.0) / n2;
      if (weight == 0) continue;
      const double* Aq = A.data() + q * nn;
#pragma omp simd
      for (int64_t k = 0; k < nn; ++k) gA[k] += weight * Aq[k];
    }
    // by D: double centring is its own adjoint (gA is symmetric: row means = column means)
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) sum += gA[i * n + j];
      mean[i] = sum / n;
      total += sum;
    }
    total /= n2;
    // by x: s_ij = x_i^2 - 2 x_i x_j + x_j^2, d s_ij / d x_i = 2 (x_i - x_j); the (j, i)
    // entry adds as much again (everything here is symmetric in i, j)
    const double* xp = x + p * n;
    const double* slope_p = slope.data() + p * nn;
    for (int64_t i = 0; i < n; ++i) {
      const double shift = total - mean[i], xi = xp[i];
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) sum += (gA[i * n + j] + shift - mean[j]) * slope_p[i * n + j] * (xi - xp[j]);
      gx[p * n + i] = 4 * sum;
    }
  }
  return {torch::tensor(loss, torch::kFloat64).to(V.scalar_type()), grad.to(V.scalar_type())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("select_edges", &select_edges, "a batch's kept edges, by head and by tail");
  m.def("relational_forward", &relational_forward, "relation-aware KG mean, forward");
  m.def("relational_backward", &relational_backward, "relation-aware KG mean, backward");
  m.def("random_words", &random_words, "counter-based random 32-bit words for dropout masks");
  m.def("dropout_normalize_forward", &dropout_normalize_forward, "message dropout + row L2 normalisation");
  m.def("dropout_normalize_backward", &dropout_normalize_backward, "its backward");
  m.def("user_side_forward", &user_side_forward, "the user side of all hops, forward");
  m.def("user_side_backward", &user_side_backward, "the user side of all hops, backward");
  m.def("distance_loss", &distance_loss, "the intents' distance-correlation loss and its gradient");
}
