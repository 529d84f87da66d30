/* The decode attention's kernel in GCC/Clang vector types (VEC floats: 8 in AVX2, 4 in SSE2 and
 * NEON): one query group of G heads against a sequence's L cached keys and values (attend_head),
 * under the driver of attention_tasks.c. Included by kernels_vec.c, after its vf, vi, vload,
 * vstore, splat, vsel, vmax, hmax, hsum and vexp, which it uses. */
/* Attention of one new token per sequence over its cached keys and values (contract in
 * decode_attention_avx512.c): online softmax over blocks of KEYS keys, one task per (sequence,
 * key/value head). Head sizes that are a multiple of VEC run attend_fast for the common shapes
 * (specialised per constant G and NV, no register spilled in its loops: see there); others run
 * attend_any. */
#define KEYS 32
#define MAX_GROUP 16
#define MAX_HD 512

static inline float softmax_block(float *s, long n, float *m, float *l) {
  vf most = splat(*m);
  long j = 0;
  for (; j + VEC <= n; j += VEC) most = vmax(most, vload(s + j));
  float top = hmax(most);
  for (; j < n; j++) top = s[j] > top ? s[j] : top;
  float corr = expf(*m - top), sum = 0.0f;
  j = 0;
  vf acc = splat(0.0f);
  for (; j + VEC <= n; j += VEC) {
    vf p = vexp(vload(s + j) - top);
    vstore(s + j, p);
    acc += p;
  }
  sum = hsum(acc);
  for (; j < n; j++) {
    s[j] = expf(s[j] - top);
    sum += s[j];
  }
  *l = *l * corr + sum;
  *m = top;
  return corr;
}

/* Within each 128-bit lane of a and b (4 floats): [a0+a2, b0+b2, a1+a3, b1+b3] */
static inline vf fold2(vf a, vf b) {
#if VEC == 4
  return __builtin_shufflevector(a, b, 0, 4, 1, 5) + __builtin_shufflevector(a, b, 2, 6, 3, 7);
#elif VEC == 8
  return __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13) + __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15);
#else
#error "attend_fast folds vectors of 4 or 8 floats"
#endif
}
/* fold2(a, b), fold2(c, d) -> within each 128-bit lane: the lane's sums of a, b, c, d */
static inline vf fold4(vf ab, vf cd) {
#if VEC == 4
  return __builtin_shufflevector(ab, cd, 0, 1, 4, 5) + __builtin_shufflevector(ab, cd, 2, 3, 6, 7);
#else
  return __builtin_shufflevector(ab, cd, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(ab, cd, 2, 3, 10, 11, 6, 7, 14, 15);
#endif
}

/* Key row kt's partial dot products with each head's query: d[g] */
static inline __attribute__((always_inline)) void dots(const float *Q, const float *kt, vf *d, const int G,
                                                       const int NV) {
  const long hd = NV * VEC;
  vf k0 = vload(kt);
  for (int g = 0; g < G; g++) d[g] = vload(Q + g * hd) * k0;
  for (int v = 1; v < NV; v++) {
    vf kv = vload(kt + v * VEC);
    for (int g = 0; g < G; g++) d[g] += vload(Q + g * hd + v * VEC) * kv;
  }
}

/* Key j of the block at K (n keys valid): d[g]; past n, the last valid key again (its score is
 * masked by the caller) */
static inline __attribute__((always_inline)) void key_dots(const float *Q, const float *K, long j, long n, vf *d,
                                                           const int G, const int NV) {
  dots(Q, K + (j < n ? j : n - 1) * NV * VEC, d, G, NV);
}

/* Keys j0 .. j0 + 3 (j0 < n): w[g], within each 128-bit lane, head g's sums of the four */
static inline __attribute__((always_inline)) void quad(const float *Q, const float *K, long j0, long n, vf *w,
                                                       const int G, const int NV) {
  vf a[MAX_GROUP], b[MAX_GROUP], pair[MAX_GROUP];
  key_dots(Q, K, j0, n, a, G, NV);
  key_dots(Q, K, j0 + 1, n, b, G, NV);
  for (int g = 0; g < G; g++) pair[g] = fold2(a[g], b[g]);
  key_dots(Q, K, j0 + 2, n, a, G, NV);
  key_dots(Q, K, j0 + 3, n, b, G, NV);
  for (int g = 0; g < G; g++) w[g] = fold4(pair[g], fold2(a[g], b[g]));
}

/* Keys j0 .. j0 + VEC - 1 of the block (j0 < n): s[g], head g's VEC scores in key order (unscaled;
 * past n, any finite value). For VEC = 8 two quads, their 128-bit lanes added across. */
static inline __attribute__((always_inline)) void score_vector(const float *Q, const float *K, long j0, long n, vf *s,
                                                               const int G, const int NV) {
#if VEC == 4
  quad(Q, K, j0, n, s, G, NV);
#else
  vf w0[MAX_GROUP], w1[MAX_GROUP];
  quad(Q, K, j0, n, w0, G, NV);
  if (j0 + 4 < n) quad(Q, K, j0 + 4, n, w1, G, NV);
  else
    for (int g = 0; g < G; g++) w1[g] = splat(0.0f);
  for (int g = 0; g < G; g++)
    s[g] = __builtin_shufflevector(w0[g], w1[g], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(w0[g], w1[g], 4, 5, 6, 7, 12, 13, 14, 15);
#endif
}

/* The register-resident path. A head's scores of VEC keys are made as one vector: each key's
 * partial dot products (a vector), folded VEC keys into one by shuffles and additions (fold2,
 * fold4, then across 128-bit lanes), where a horizontal sum a score took log2 VEC shuffles and
 * additions for one float. The block's scores, -inf past the length, then join the running
 * softmax a vector at a time (softmax_block on whole vectors). No vector lives across the whole
 * block in registers: the values are added group by group, CH vectors of one group's output at a
 * time, over the block's keys (in L1 by then), so that the live vectors are CH accumulators, a
 * broadcast score and one loaded value: 10 of AVX2's and SSE's 16 registers, where all G x NV
 * accumulators at once (24 for SmolLM2's 3 x 64 in AVX2) spilled to the stack at every key.
 * Between blocks a group's output waits in acc, in L1. The keys and values stream in by the
 * hardware's prefetchers alone: a software prefetch of each row a block ahead made the stage
 * slower in AVX2 on AMD Zen 4 (bench/decode_stack_ab.py --stages), as in decode_attention_avx512.c. */
#define CH (NV < 8 ? NV : 8)
static inline __attribute__((always_inline)) void attend_fast(const float *Q, const float *K, const float *V, long L,
                                                              float scale, float *O, const int G, const int NV) {
  const long hd = NV * VEC;
  float acc[MAX_GROUP * 128 > 256 ? 256 : MAX_GROUP * 128] __attribute__((aligned(64))); /* G * hd <= 256 */
  float m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (int g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  for (long i = 0; i < G * hd; i++) acc[i] = 0.0f;
  vi lane;
  for (int i = 0; i < VEC; i++) lane[i] = i;
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS, whole = (n + VEC - 1) / VEC * VEC;
    for (long j0 = 0; j0 < n; j0 += VEC) {
      vf sv[MAX_GROUP];
      score_vector(Q, K + t0 * hd, j0, n, sv, G, NV);
      vi inside = lane < (int)(n - j0); /* the lanes of keys before n */
      for (int g = 0; g < G; g++) vstore(s[g] + j0, vsel(inside, sv[g] * scale, splat(-INFINITY)));
    }
    for (int g = 0; g < G; g++) {
      float c = softmax_block(s[g], whole, &m[g], &l[g]); /* a key past n: exp(-inf), exp's floor, ~1e-38 */
      for (int v0 = 0; v0 < NV; v0 += CH) {
        float *a = acc + g * hd + v0 * VEC;
        const float *vt = V + t0 * hd + v0 * VEC;
        vf r[CH];
        for (int v = 0; v < CH; v++) r[v] = vload(a + v * VEC) * c;
        for (long j = 0; j < n; j++) {
          vf p = splat(s[g][j]);
          for (int v = 0; v < CH; v++) r[v] += p * vload(vt + j * hd + v * VEC);
        }
        for (int v = 0; v < CH; v++) vstore(a + v * VEC, r[v]);
      }
    }
  }
  for (int g = 0; g < G; g++) {
    float inv = 1.0f / l[g];
    for (int v = 0; v < NV; v++) vstore(O + g * hd + v * VEC, vload(acc + g * hd + v * VEC) * inv);
  }
}
#undef CH

static void attend_any(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                       long hd) {
  float acc[MAX_GROUP][MAX_HD], m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (long g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (long d = 0; d < hd; d++) acc[g][d] = 0.0f;
  }
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS;
    for (long j = 0; j < n; j++) {
      const float *kt = K + (t0 + j) * hd;
      for (long g = 0; g < G; g++) {
        float dot = 0.0f;
        for (long d = 0; d < hd; d++) dot += Q[g * hd + d] * kt[d];
        s[g][j] = dot * scale;
      }
    }
    for (long g = 0; g < G; g++) {
      float c = softmax_block(s[g], n, &m[g], &l[g]);
      for (long d = 0; d < hd; d++) acc[g][d] *= c;
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      for (long g = 0; g < G; g++)
        for (long d = 0; d < hd; d++) acc[g][d] += s[g][j] * vt[d];
    }
  }
  for (long g = 0; g < G; g++)
    for (long d = 0; d < hd; d++) O[g * hd + d] = acc[g][d] / l[g];
}

/* One query group (G heads) against L keys and values: the register-resident path where the
 * shape has one, else the general one. */
static void attend_head(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                        long hd) {
  long NV = hd % VEC ? 0 : hd / VEC;
#define FAST(g, nv) else if (G == g && NV == nv) attend_fast(Q, K, V, L, scale, O, g, nv);
  if (0) {
  }
  FAST(1, 64 / VEC) FAST(2, 64 / VEC) FAST(3, 64 / VEC) FAST(4, 64 / VEC) FAST(1, 128 / VEC) FAST(2, 128 / VEC)
  else attend_any(Q, K, V, L, scale, O, G, hd);
#undef FAST
}
