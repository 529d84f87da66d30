/* The attention's tasks and the key/value store, the same for every build: included by
 * kernels_avx512.c and kernels_vec.c after each defines its own attend_head (one query group of
 * G heads against L keys and values), so each build runs its own vector code under one driver.
 * Needs <string.h> (memcpy) and OpenMP, as both sources have. */

/* One task of the attention: sequence task / KVH, key/value head task % KVH. */
static void attend_task(const float *q, long q_row, const float *k, const float *v, long cap, const long *lengths,
                        long H, long KVH, long hd, float scale, float *out, long task) {
  long G = H / KVH, b = task / KVH, kvh = task % KVH;
  attend_head(q + b * q_row + kvh * G * hd, k + (b * KVH + kvh) * cap * hd, v + (b * KVH + kvh) * cap * hd,
              lengths[b], scale, out + (b * H + kvh * G) * hd, G, hd);
}

/* The first block of keys and values of a task to come (KEYS of each, at most its length) toward
 * L2, so that its start does not wait on memory: the task in hand streams its own a block ahead. */
static inline void prefetch_task(const float *k, const float *v, long cap, const long *lengths, long KVH, long hd,
                                 long task) {
  long b = task / KVH, n = lengths[b] < KEYS ? lengths[b] : KEYS;
  const char *kp = (const char *)(k + task * cap * hd), *vp = (const char *)(v + task * cap * hd);
  for (long i = 0; i < n * hd * (long)sizeof(float); i += 64) {
    __builtin_prefetch(kp + i, 0, 2);
    __builtin_prefetch(vp + i, 0, 2);
  }
}

void tenacia_decode_attention(const float *q, long q_row, const float *k, const float *v, long cap,
                              const long *lengths, long B, long H, long KVH, long hd, float scale, float *out,
                              int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (long task = 0; task < B * KVH; task++) attend_task(q, q_row, k, v, cap, lengths, H, KVH, hd, scale, out, task);
}

/* A prefill's causal attention: prefill_attention.c, included after this file. */

/* 4. The new token's key and value of every sequence, into its paged-cache slot and its decode
 * mirror row, in one call (four index_copy_ calls and two copies in torch).
 * k, v: head h of sequence b at k + b * kv_row + h * hd; cache_k, cache_v: one layer's
 * (slots, KVH, hd); mirror_k, mirror_v: (B, KVH, cap, hd), row lengths[b] - 1 of sequence b. */
static void store_kv_row(const float *k, const float *v, long kv_row, long b, long KVH, long hd, float *cache_k,
                         float *cache_v, const long *slots, float *mirror_k, float *mirror_v, long cap,
                         const long *lengths) {
  for (long h = 0; h < KVH; h++) {
    const float *ks = k + b * kv_row + h * hd, *vs = v + b * kv_row + h * hd;
    float *ck = cache_k + (slots[b] * KVH + h) * hd, *cv = cache_v + (slots[b] * KVH + h) * hd;
    float *mk = mirror_k + ((b * KVH + h) * cap + lengths[b] - 1) * hd;
    float *mv = mirror_v + ((b * KVH + h) * cap + lengths[b] - 1) * hd;
    memcpy(ck, ks, hd * sizeof(float));
    memcpy(mk, ks, hd * sizeof(float));
    memcpy(cv, vs, hd * sizeof(float));
    memcpy(mv, vs, hd * sizeof(float));
  }
}

/* A prefill's N new keys (or values) into one layer's cache (capacity slots of width floats): row t
 * (width floats, every head of token t, at rows + t * row) to slot slots[t]; one memcpy each
 * (torch's index_copy_ of a strided view takes ~0.6 us a row). Returns -1, or the first t whose
 * slot is outside [0, capacity), and then nothing is written. */
long tenacia_store_rows(const float *rows, long row, long n, long width, float *store, long capacity,
                        const long *slots) {
  for (long t = 0; t < n; t++)
    if (slots[t] < 0 || slots[t] >= capacity) return t;
  for (long t = 0; t < n; t++) memcpy(store + slots[t] * width, rows + t * row, width * sizeof(float));
  return -1;
}

void tenacia_store_kv(const float *k, const float *v, long kv_row, long B, long KVH, long hd, float *cache_k,
                      float *cache_v, const long *slots, float *mirror_k, float *mirror_v, long cap,
                      const long *lengths) {
  for (long b = 0; b < B; b++)
    store_kv_row(k, v, kv_row, b, KVH, hd, cache_k, cache_v, slots, mirror_k, mirror_v, cap, lengths);
}

