// recbole-kgin's fused CPU kernels (built by recbole_kgin/kernel_build.py, used by recbole_kgin/model/fused.py).
//
// KGIN's relation-aware KG mean (paper Eq. 11) as one pass over the edges:
//   forward:  Y[h] = sum_{k in row h} w[k] * R[rel[k]] (*) X[col[k]]
//   backward: dX[t] = sum_{k in column t} w[k] * R[rel[k]] (*) dY[head[k]]
//             dR[r] = sum_{k of relation r} w[k] * X[col[k]] (*) dY[head[k]]
// (*) is the element-wise product; rows are CSR (crow, col), edges with w == 0
// (dropped by node dropout) are skipped. No (edges, d) or (groups, d) tensor is built.
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

torch::Tensor relational_forward(torch::Tensor X, torch::Tensor R, torch::Tensor crow, torch::Tensor col, torch::Tensor rel,
                      torch::Tensor w) {
  for (auto* t : {&X, &R, &crow, &col, &rel, &w}) check(*t, "argument");
  const int64_t n_rows = crow.size(0) - 1, d = X.size(1), n_edges = col.size(0);
  auto Y = torch::empty({n_rows, d}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "relational_mean_forward", [&] {
    const scalar_t* __restrict__ x = X.data_ptr<scalar_t>();
    const scalar_t* __restrict__ r = R.data_ptr<scalar_t>();
    const scalar_t* __restrict__ weight = w.data_ptr<scalar_t>();
    const int64_t* cp = crow.data_ptr<int64_t>();
    const int64_t* cl = col.data_ptr<int64_t>();
    const int64_t* rl = rel.data_ptr<int64_t>();
    scalar_t* y = Y.data_ptr<scalar_t>();
    parallel_chunks(chunk_bounds(cp, n_rows), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        scalar_t* __restrict__ out = y + h * d;
        std::fill(out, out + d, scalar_t(0));
        for (int64_t k = cp[h]; k < cp[h + 1]; ++k) {
          if (k + kPrefetchAhead < n_edges) prefetch_row(x + cl[k + kPrefetchAhead] * d, d);
          const scalar_t wk = weight[k];
          if (wk == 0) continue;
          const scalar_t* __restrict__ xt = x + cl[k] * d;
          const scalar_t* __restrict__ rr = r + rl[k] * d;
          for (int64_t j = 0; j < d; ++j) out[j] += wk * rr[j] * xt[j];
        }
      }
    });
  });
  return Y;
}

// Transposed CSR (crow_t over tails; head_t, rel_t, perm_t per transposed entry;
// perm_t gives the entry's position in the forward order, where w is indexed).
std::vector<torch::Tensor> relational_backward(torch::Tensor dY, torch::Tensor X, torch::Tensor R, torch::Tensor crow_t,
                                    torch::Tensor head_t, torch::Tensor rel_t, torch::Tensor perm_t,
                                    torch::Tensor w) {
  for (auto* t : {&dY, &X, &R, &crow_t, &head_t, &rel_t, &perm_t, &w}) check(*t, "argument");
  const int64_t n_tails = crow_t.size(0) - 1, d = X.size(1), n_relations = R.size(0), n_entries = head_t.size(0);
  auto dX = torch::empty_like(X);
  const auto bounds = chunk_bounds(crow_t.data_ptr<int64_t>(), n_tails);
  auto dR_parts = torch::zeros({static_cast<int64_t>(bounds.size()) - 1, n_relations, d}, R.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "relational_mean_backward", [&] {
    const scalar_t* __restrict__ gy = dY.data_ptr<scalar_t>();
    const scalar_t* __restrict__ x = X.data_ptr<scalar_t>();
    const scalar_t* __restrict__ r = R.data_ptr<scalar_t>();
    const scalar_t* __restrict__ weight = w.data_ptr<scalar_t>();
    const int64_t* cp = crow_t.data_ptr<int64_t>();
    const int64_t* heads = head_t.data_ptr<int64_t>();
    const int64_t* rl = rel_t.data_ptr<int64_t>();
    const int64_t* perm = perm_t.data_ptr<int64_t>();
    scalar_t* gx = dX.data_ptr<scalar_t>();
    scalar_t* gr_parts = dR_parts.data_ptr<scalar_t>();
    parallel_chunks(bounds, [&](int64_t chunk, int64_t begin, int64_t end) {
      scalar_t* gr = gr_parts + chunk * n_relations * d;
      for (int64_t t = begin; t < end; ++t) {
        scalar_t* __restrict__ gxt = gx + t * d;
        const scalar_t* __restrict__ xt = x + t * d;
        std::fill(gxt, gxt + d, scalar_t(0));
        for (int64_t k = cp[t]; k < cp[t + 1]; ++k) {
          if (k + kPrefetchAhead < n_entries) prefetch_row(gy + heads[k + kPrefetchAhead] * d, d);
          const scalar_t wk = weight[perm[k]];
          if (wk == 0) continue;
          const scalar_t* __restrict__ g = gy + heads[k] * d;
          const scalar_t* __restrict__ rr = r + rl[k] * d;
          scalar_t* __restrict__ grr = gr + rl[k] * d;
          for (int64_t j = 0; j < d; ++j) {
            gxt[j] += wk * rr[j] * g[j];
            grr[j] += wk * xt[j] * g[j];
          }
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

// Row ranges for row-wise kernels: chunks of equal row counts (their number follows
// the size only).
std::vector<int64_t> row_chunks(int64_t n_rows, int64_t d) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, n_rows * d / (8 * kEdgesPerChunk) + 1));
  std::vector<int64_t> bounds(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) bounds[c] = n_rows * c / chunks;
  return bounds;
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
    const scalar_t* __restrict__ x = X.data_ptr<scalar_t>();
    const int16_t* __restrict__ lane = lanes.data_ptr<int16_t>();
    scalar_t* __restrict__ o = out.data_ptr<scalar_t>();
    scalar_t* __restrict__ den = denominators.data_ptr<scalar_t>();
    const int32_t cut = static_cast<int32_t>(threshold);
    parallel_chunks(row_chunks(n, d), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict__ xi = x + i * d;
        const int16_t* __restrict__ li = lane + i * d;
        scalar_t* __restrict__ oi = o + i * d;
        scalar_t squares = 0;
        _Pragma("omp simd reduction(+ : squares)")
        for (int64_t j = 0; j < d; ++j) {
          const scalar_t z = xi[j] * kept<scalar_t>(li[j], cut);
          oi[j] = z;
          squares += z * z;
        }
        const scalar_t denominator = std::max(std::sqrt(squares), static_cast<scalar_t>(eps));
        den[i] = denominator;
        for (int64_t j = 0; j < d; ++j) oi[j] /= denominator;
      }
    });
  });
  return {out, denominators};
}

// grad = keep * (g - out * <out, g>) / den, the projection left out where |z| <= eps.
torch::Tensor dropout_normalize_backward(torch::Tensor grad_out, torch::Tensor out, torch::Tensor lanes,
                                         int64_t threshold, torch::Tensor denominators, double eps) {
  check(grad_out, "grad");
  check(out, "out");
  const int64_t n = out.size(0), d = out.size(1);
  auto grad = torch::empty_like(out);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dropout_normalize_backward", [&] {
    const scalar_t* __restrict__ g = grad_out.data_ptr<scalar_t>();
    const scalar_t* __restrict__ o = out.data_ptr<scalar_t>();
    const int16_t* __restrict__ lane = lanes.data_ptr<int16_t>();
    const scalar_t* __restrict__ den = denominators.data_ptr<scalar_t>();
    scalar_t* __restrict__ result = grad.data_ptr<scalar_t>();
    const int32_t cut = static_cast<int32_t>(threshold);
    const scalar_t floor = static_cast<scalar_t>(eps);
    parallel_chunks(row_chunks(n, d), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict__ gi = g + i * d;
        const scalar_t* __restrict__ oi = o + i * d;
        const int16_t* __restrict__ li = lane + i * d;
        scalar_t* __restrict__ ri = result + i * d;
        scalar_t projection = 0;
        if (den[i] > floor) {
          _Pragma("omp simd reduction(+ : projection)")
          for (int64_t j = 0; j < d; ++j) projection += oi[j] * gi[j];
        }
        const scalar_t denominator = den[i];
        for (int64_t j = 0; j < d; ++j) {
          ri[j] = (gi[j] - oi[j] * projection) / denominator * kept<scalar_t>(li[j], cut);
        }
      }
    });
  });
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("relational_forward", &relational_forward, "relation-aware KG mean, forward");
  m.def("relational_backward", &relational_backward, "relation-aware KG mean, backward");
  m.def("dropout_normalize_forward", &dropout_normalize_forward, "message dropout + row L2 normalisation");
  m.def("dropout_normalize_backward", &dropout_normalize_backward, "its backward");
}
