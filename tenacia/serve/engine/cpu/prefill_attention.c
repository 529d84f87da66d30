/* A prefill's causal attention, tiled: included by kernels_avx512.c and kernels_vec.c, each of
 * which first defines its vector of VEC floats (vf) and vload, vstore, splat, vexp, vmax, hmax,
 * hsum on it, and its own attend_head (the decode attention's one query group against L keys),
 * so one algorithm runs in each build's registers: AVX-512 (VEC 16), AVX2 (8), SSE2/NEON (4).
 *
 * Why: one token at a time (attend_head) reads every key and value again for each token and
 * reduces every score across a vector; the products of a prefill have no such waste (measured in
 * docs/benchmarks.md, "A prefill's attention in tiles"). Here the G query heads that share a
 * key/value head, over QT consecutive tokens, are R = QT * G rows (R <= QROWS) taken together
 * against blocks of KBLOCK keys, FlashAttention-style:
 *   S (R x KBLOCK) = Q . K^T  register-blocked: SR rows x SP panels of 16 keys per inner loop, a
 *                             broadcast query float times a vector of 16 keys' floats, no reduction;
 *   online softmax per row    the running maximum m and sum l; corr rescales what came before;
 *   O (R x hd) = corr O + P . V  register-blocked: OR rows x OC vectors of the head.
 * Keys are packed once per call in panels of 16 keys, d-major (Kp[p][d][16]; the rest of the last
 * panel zero), so a step of the score loop reads one 64-byte line; values are read in place.
 *
 * Contract (tenacia_prefill_attention): one sequence's n new tokens after `start` cached ones
 * (0 for a whole new prompt; a cached prefix, or a long prompt's earlier chunks); new token i
 * (0 .. n - 1), at position start + i, attends to keys 0 .. start + i. q: query head h of new
 * token i at q + i * q_row + h * hd; key head h of position t (0 .. start + n - 1) at
 * k + h * k_head + t * k_row, values likewise (views of the fused q/k/v product, or (KVH,
 * start + n, hd) tensors); out: (n, H, hd); G = H / KVH <= MAX_GROUP, hd <= MAX_HD.
 * Threads take (key/value head, query block) tasks dynamically, the longest first. A head size
 * that is not a multiple of VEC runs attend_head token by token instead. */

#define QROWS 48 /* query rows (tokens x G) per task at most: S, O, Q of a task stay in L1/L2 */
#define KBLOCK 64 /* keys per block */

#if VEC == 16
#define SR 12 /* score tile: 12 rows x 2 panels = 24 accumulators of AVX-512's 32 registers */
#define SP 2
#define OR 6 /* value tile: 6 rows x 4 vectors = 24 accumulators */
#define OC 4
#else
#define SP 1
#define SR (12 / (16 / VEC)) /* 6 rows x 2 vectors (AVX2), 3 x 4 (SSE, NEON): 12 accumulators */
#define OR 6                 /* value tile: 6 rows x 2 vectors = 12 accumulators of 16 registers */
#define OC 2
#endif
#define PVEC (16 / VEC) /* vectors per panel row */

/* S[m][0 .. 16 np) = Q[m] . the keys of np panels, mr rows; Q scaled and transposed (row m's
 * float d at qs[d * QROWS + m]: one step's mr floats side by side), kp the first panel (panels
 * hd * 16 floats apart), s row stride KBLOCK. */
static inline __attribute__((always_inline)) void score_tile(const float *qs, long hd, const float *kp, float *s,
                                                             const int mr, const int np) {
  vf acc[12][4]; /* mr <= SR <= 12, np * PVEC <= 4: the compiler keeps the used ones in registers */
  for (int m = 0; m < mr; m++)
    for (int v = 0; v < np * PVEC; v++) acc[m][v] = splat(0.0f);
  for (long d = 0; d < hd; d++) {
    vf w[4];
    for (int p = 0; p < np; p++)
      for (int v = 0; v < PVEC; v++) w[p * PVEC + v] = vload(kp + (p * hd + d) * 16 + v * VEC);
    for (int m = 0; m < mr; m++) {
      vf x = splat(qs[d * QROWS + m]);
      for (int v = 0; v < np * PVEC; v++) acc[m][v] += x * w[v];
    }
  }
  for (int m = 0; m < mr; m++)
    for (int v = 0; v < np * PVEC; v++) vstore(s + m * KBLOCK + v * VEC, acc[m][v]);
}

/* O[m][0 .. nc VEC) = corr[m] * O[m] + sum over j < nk of P[m][j] V[j], mr rows, nc vectors of
 * the head from vt (row stride ldv); p row stride KBLOCK, o row stride hd. */
static inline __attribute__((always_inline)) void value_tile(const float *p, const float *corr, const float *vt,
                                                             long ldv, long hd, long nk, float *o, const int mr,
                                                             const int nc) {
  vf acc[OR][4]; /* nc <= OC <= 4 */
  for (int m = 0; m < mr; m++)
    for (int c = 0; c < nc; c++) acc[m][c] = vload(o + m * hd + c * VEC) * corr[m];
  for (long j = 0; j < nk; j++) {
    vf w[4];
    for (int c = 0; c < nc; c++) w[c] = vload(vt + j * ldv + c * VEC);
    for (int m = 0; m < mr; m++) {
      vf x = splat(p[m * KBLOCK + j]);
      for (int c = 0; c < nc; c++) acc[m][c] += x * w[c];
    }
  }
  for (int m = 0; m < mr; m++)
    for (int c = 0; c < nc; c++) vstore(o + m * hd + c * VEC, acc[m][c]);
}

/* S rows r0 .. r1 - 1 against np panels from kp: SR rows at a time, SP panels at a time (one
 * for an odd last panel), the remainder rows by a tile specialised for their count. */
static void scores(const float *qs, long hd, const float *kp, float *s, long r0, long r1, int np) {
  for (int p = 0; p < np; p += SP) {
    const float *kq = kp + p * hd * 16;
    float *sq = s + p * 16;
    int wide = SP > 1 && np - p >= SP;
    long r = r0;
    for (; r + SR <= r1; r += SR) {
      if (wide) score_tile(qs + r, hd, kq, sq + r * KBLOCK, SR, SP);
      else score_tile(qs + r, hd, kq, sq + r * KBLOCK, SR, 1);
    }
    switch (r1 - r) {
#define LEFT(M)                                                         \
  case M:                                                               \
    if (M >= SR) break; /* never: no code for it */                     \
    if (wide) score_tile(qs + r, hd, kq, sq + r * KBLOCK, M, SP);       \
    else score_tile(qs + r, hd, kq, sq + r * KBLOCK, M, 1);             \
    break;
      LEFT(1) LEFT(2) LEFT(3) LEFT(4) LEFT(5) LEFT(6) LEFT(7) LEFT(8) LEFT(9) LEFT(10) LEFT(11)
#undef LEFT
      default: break;
    }
  }
}

/* O rows 0 .. R - 1 += P . V, row r over its first nk[r] keys; rows in order of token, so the
 * last row of a tile has the most keys (the others' scores past their own are zero). */
static void values(const float *p, const float *corr, const float *vt, long ldv, long hd, const long *nk, float *o,
                   long R) {
  long nv = hd / VEC;
  for (long r = 0; r < R; r += OR) {
    long mr = R - r < OR ? R - r : OR, keys = nk[r + mr - 1];
    for (long c = 0; c < nv; c += OC) {
      long nc = nv - c < OC ? nv - c : OC;
      const float *pr = p + r * KBLOCK, *cr = corr + r, *vc = vt + c * VEC;
      float *oc = o + r * hd + c * VEC;
      switch (mr * 8 + nc) { /* specialised for each constant shape */
#define CASE(M, C) case M * 8 + C: if (M <= OR && C <= OC) value_tile(pr, cr, vc, ldv, hd, keys, oc, M, C); break;
#define ROW(M) CASE(M, 1) CASE(M, 2) CASE(M, 3) CASE(M, 4)
        ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6)
#undef ROW
#undef CASE
        default: break;
      }
    }
  }
}

/* Softmax of row s (w keys, the first nv >= 1 visible) joined to the running (*m, *l): s becomes
 * exp(s - max), zero past nv; returns the factor for what came before. The masked keys add
 * vexp(-87.3) (~1e-38 each) to the sum before they are zeroed: below float32's resolution. */
static inline float softmax_row(float *s, long nv, long w, float *m, float *l) {
  for (long j = nv; j < w; j++) s[j] = -INFINITY;
  vf top = splat(*m);
  for (long j = 0; j < w; j += VEC) top = vmax(top, vload(s + j));
  float mx = hmax(top), corr = expf(*m - mx);
  vf sum = splat(0.0f);
  for (long j = 0; j < w; j += VEC) {
    vf e = vexp(vload(s + j) - mx);
    vstore(s + j, e);
    sum += e;
  }
  for (long j = nv; j < w; j++) s[j] = 0.0f;
  *l = *l * corr + hsum(sum);
  *m = mx;
  return corr;
}

/* One panel of a head's keys (key t at k + t * k_row, n of them): keys 16 panel .. 16 panel + 15,
 * d-major, zero past n. */
static void pack_keys(const float *k, long k_row, long n, long hd, long panel, float *kp) {
  for (long j = 0, t = panel * 16; j < 16; j++, t++)
    for (long d = 0; d < hd; d++) kp[d * 16 + j] = t < n ? k[t * k_row + d] : 0.0f;
}

/* One task: new tokens i0 .. i0 + qt - 1 (positions start + i0 ..) of head group kvh. */
static void prefill_task(const float *q, long q_row, const float *kp, const float *v, long v_row, long H, long G,
                         long hd, float scale, float *out, long start, long i0, long qt, long kvh, float *scratch) {
  long R = qt * G, nk[QROWS];
  float *qs = scratch, *o = qs + QROWS * hd, *s = o + QROWS * hd, m[QROWS], l[QROWS], corr[QROWS];
  for (long r = 0; r < R; r++) {
    const float *qr = q + (i0 + r / G) * q_row + (kvh * G + r % G) * hd;
    for (long d = 0; d < hd; d++) qs[d * QROWS + r] = qr[d] * scale;
    for (long d = 0; d < hd; d++) o[r * hd + d] = 0.0f;
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  long p0 = start + i0, end = p0 + qt; /* the first row's position; keys 0 .. end - 1 */
  for (long k0 = 0; k0 < end; k0 += KBLOCK) {
    long keys = end - k0 < KBLOCK ? end - k0 : KBLOCK;
    /* rows that see no key of this block (positions before k0) come first: skip them */
    long first = k0 > p0 ? (k0 - p0) * G : 0;
    scores(qs, hd, kp + (k0 / 16) * hd * 16, s, first, R, (int)((keys + 15) / 16));
    for (long r = first; r < R; r++) {
      long nv = p0 + r / G - k0 + 1;
      nv = nv < keys ? nv : keys;
      nk[r] = nv;
      corr[r] = softmax_row(s + r * KBLOCK, nv, (keys + 15) / 16 * 16, &m[r], &l[r]);
    }
    values(s + first * KBLOCK, corr + first, v + k0 * v_row, v_row, hd, nk + first, o + first * hd, R - first);
  }
  for (long r = 0; r < R; r++) {
    float inv = 1.0f / l[r], *dst = out + ((i0 + r / G) * H + kvh * G + r % G) * hd;
    for (long d = 0; d < hd; d++) dst[d] = o[r * hd + d] * inv;
  }
}

/* Token by token, each against keys 0 .. start + i (attend_head, which reads (KVH, L, hd) keys
 * and values, L = start + n: copied so first where they are views): the path for a head size that
 * is not a multiple of VEC. Returns -1 when memory for the copy could not be allocated, else 0. */
static int prefill_by_token(const float *q, long q_row, const float *k, long k_head, long k_row, const float *v,
                             long v_head, long v_row, long start, long n, long H, long KVH, long hd, float scale,
                             float *out, int threads) {
  long G = H / KVH, L = start + n, whole = k_head == L * hd && k_row == hd && v_head == L * hd && v_row == hd;
  float *copy = whole ? 0 : malloc(sizeof(float) * 2 * KVH * L * hd);
  if (copy) {
    for (long h = 0; h < KVH; h++)
      for (long t = 0; t < L; t++) {
        memcpy(copy + (h * L + t) * hd, k + h * k_head + t * k_row, hd * sizeof(float));
        memcpy(copy + ((KVH + h) * L + t) * hd, v + h * v_head + t * v_row, hd * sizeof(float));
      }
    k = copy;
    v = copy + KVH * L * hd;
  } else if (!whole) {
    return -1;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (long task = 0; task < n * KVH; task++) {
    long i = n - 1 - task / KVH, kvh = task % KVH;
    attend_head(q + i * q_row + kvh * G * hd, k + kvh * L * hd, v + kvh * L * hd, start + i + 1, scale,
                out + (i * H + kvh * G) * hd, G, hd);
  }
  free(copy);
  return 0;
}

/* Returns 0, or -1 when memory for its scratch could not be allocated (out then not written). */
int tenacia_prefill_attention(const float *q, long q_row, const float *k, long k_head, long k_row, const float *v,
                              long v_head, long v_row, long start, long n, long H, long KVH, long hd, float scale,
                              float *out, int threads) {
  long G = H / KVH, qt = QROWS / G, blocks = (n + qt - 1) / qt, L = start + n, panels = (L + 15) / 16;
  long packed = KVH * panels * 16 * hd, each = QROWS * (2 * hd + KBLOCK);
  if (hd % VEC)
    return prefill_by_token(q, q_row, k, k_head, k_row, v, v_head, v_row, start, n, H, KVH, hd, scale, out, threads);
  float *kp = malloc(sizeof(float) * (packed + threads * each));
  if (!kp) return -1;
#pragma omp parallel num_threads(threads)
  {
    float *scratch = kp + packed + omp_get_thread_num() * each;
#pragma omp for schedule(static)
    for (long t = 0; t < KVH * panels; t++)
      pack_keys(k + (t / panels) * k_head, k_row, L, hd, t % panels, kp + t * 16 * hd);
#pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < blocks * KVH; task++) { /* the last query blocks, the most keys, first */
      long b = blocks - 1 - task / KVH, kvh = task % KVH, i0 = b * qt;
      prefill_task(q, q_row, kp + kvh * panels * 16 * hd, v + kvh * v_head, v_row, H, G, hd, scale, out, start, i0,
                   n - i0 < qt ? n - i0 : qt, kvh, scratch);
    }
  }
  free(kp);
  return 0;
}

#undef QROWS
#undef KBLOCK
#undef SR
#undef SP
#undef OR
#undef OC
#undef PVEC
