/*
 * bf16x3 float32 matmuls on x86 CPUs with AMX: y (M, N) = a (M, K) @ w^T + bias, w (N, K).
 *
 * Each float32 operand x is split into two bfloat16 parts, hi = bf16(x) and lo = bf16(x - hi),
 * so hi + lo keeps 16 of float32's 24 significand bits. The product is a_hi w_hi + a_hi w_lo +
 * a_lo w_hi (a_lo w_lo, about 2^-16 of it, is dropped), accumulated in float32 by the AMX tile
 * unit. This is what torch.set_float32_matmul_precision("high") allows; PyTorch's CPU matmuls
 * offer no bf16 product with a float32 result, hence this file.
 *
 * Every output row depends on its own input row only, through the same sequence of tile
 * instructions whatever M is, so a row's result is bit-identical in any batch.
 *
 * Layouts (tiles of 1 KiB, 16 rows of 64 bytes, as the tile loads read them):
 *   a parts: [ceil(M / 32) * 2][ceil(K / 32)][16 rows][32 k]            rows past M are zero
 *   w parts: [ceil(N / 32) * 2][ceil(K / 32)][16 k pairs][16 n][2 k]    (the VNNI pairs TDPBF16PS reads)
 * K and N past their ends are zero, so any K and N work; tails cost a partly empty tile.
 *
 * Only the kernels carry the AVX-512/AMX target attribute: the module itself runs on any x86-64
 * CPU and reports why the kernels cannot run when they cannot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(_OPENMP)
#define BF16X3_BUILT 1
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define TILE_ELEMS 512   /* bf16 values in one 16 x 64-byte tile */
#define NB_PER_CHUNK 8   /* 256 output columns: their w parts (up to 1.5 MiB at K = 1536) stay in L2 */
#define MB_PER_UNIT 4    /* 128 rows per unit of work: 16 units for a 10 s decode's 512 outputs */

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static const char *probe(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return "the CPU reports no AMX (CPUID leaf 7 missing)";
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16)) || !(b & (1u << 30))) return "the CPU lacks AVX-512F/BW";
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return "the CPU lacks AMX-TILE/AMX-BF16";
    __cpuid_count(7, 1, a, b, c, d);
    if (!(a & (1u << 5))) return "the CPU lacks AVX512-BF16";
    __cpuid(1, a, b, c, d);
    if (!(c & (1u << 27))) return "the OS has not enabled XSAVE";
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6) return "the OS has not enabled AVX-512 state";
    /* Linux hands out the 8 KiB tile state only on request. */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return "the kernel refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    return NULL;
}

static inline uint16_t bf16_rne(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Once per weight, so plain scalar code: the same round-to-nearest-even as the vector split. */
static void pack_weight(const float *w, int64_t n, int64_t k, uint16_t *hi, uint16_t *lo) {
    int64_t kt = (k + 31) / 32, tiles_n = (n + 31) / 32 * 2;
    for (int64_t nb = 0; nb < tiles_n; nb++)
        for (int64_t kb = 0; kb < kt; kb++) {
            uint16_t *th = hi + (nb * kt + kb) * TILE_ELEMS, *tl = lo + (nb * kt + kb) * TILE_ELEMS;
            for (int r = 0; r < 16; r++)
                for (int j = 0; j < 16; j++)
                    for (int p = 0; p < 2; p++) {
                        int64_t row = nb * 16 + j, col = kb * 32 + 2 * r + p;
                        float x = (row < n && col < k) ? w[row * k + col] : 0.0f;
                        uint16_t h = bf16_rne(x);
                        th[r * 32 + j * 2 + p] = h;
                        tl[r * 32 + j * 2 + p] = bf16_rne(x - bf16_to_f32(h));
                    }
        }
}

KERNEL static inline void split16(const float *x, __mmask16 valid, uint16_t *hi, uint16_t *lo) {
    __m512 v = _mm512_maskz_loadu_ps(valid, x);
    __m256bh h = _mm512_cvtneps_pbh(v);
    __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
    __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
    _mm256_storeu_si256((__m256i *)hi, (__m256i)h);
    _mm256_storeu_si256((__m256i *)lo, (__m256i)l);
}

static inline __mmask16 first_n(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* Splits rows [tile_row0 * 16, tile_row1 * 16) of a (M, K), row stride lda. */
KERNEL static void pack_rows(const float *a, int64_t m, int64_t k, int64_t lda, int64_t tile_row0,
                             int64_t tile_row1, uint16_t *hi, uint16_t *lo) {
    int64_t kt = (k + 31) / 32;
    for (int64_t mb = tile_row0; mb < tile_row1; mb++)
        for (int64_t kb = 0; kb < kt; kb++) {
            uint16_t *th = hi + (mb * kt + kb) * TILE_ELEMS, *tl = lo + (mb * kt + kb) * TILE_ELEMS;
            for (int r = 0; r < 16; r++) {
                int64_t row = mb * 16 + r, col = kb * 32;
                if (row >= m) {
                    memset(th + r * 32, 0, 64);
                    memset(tl + r * 32, 0, 64);
                    continue;
                }
                split16(a + row * lda + col, first_n(k - col), th + r * 32, tl + r * 32);
                split16(a + row * lda + col + 16, first_n(k - col - 16), th + r * 32 + 16, tl + r * 32 + 16);
            }
        }
}

typedef struct {
    int64_t m, k, n, ldy;
    const uint16_t *ahi, *alo, *whi, *wlo;
    const float *bias;
    float *y;
} gemm_args;

/* Stores the 32 x 32 block at (r0, c0) through a scratch copy, for blocks that overhang M or N. */
KERNEL static void store_partial(const gemm_args *g, int64_t r0, int64_t c0) {
    float part[4][256] __attribute__((aligned(64)));
    _tile_stored(0, part[0], 64);
    _tile_stored(1, part[1], 64);
    _tile_stored(2, part[2], 64);
    _tile_stored(3, part[3], 64);
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 16; r++) {
            int64_t row = r0 + (t >> 1) * 16 + r, col = c0 + (t & 1) * 16;
            if (row >= g->m || col >= g->n) continue;
            int64_t cols = g->n - col < 16 ? g->n - col : 16;
            memcpy(g->y + row * g->ldy + col, part[t] + r * 16, (size_t)cols * 4);
        }
}

/* One 32 x 32 output block: four accumulator tiles (0-3), two a tiles (4-5), two w tiles (6-7). */
KERNEL static void block(const gemm_args *g, int64_t mb, int64_t nb, const float *bias_rows) {
    int64_t kt = (g->k + 31) / 32, stride = kt * TILE_ELEMS;
    const uint16_t *ah = g->ahi + 2 * mb * stride, *al = g->alo + 2 * mb * stride;
    const uint16_t *wh = g->whi + 2 * nb * stride, *wl = g->wlo + 2 * nb * stride;
    /* GCC 12's tile loads do not tell the compiler they read memory: this barrier keeps the
     * caller's stores to bias_rows from being dropped as dead or moved past the loads. */
    __asm__ volatile("" ::: "memory");
    _tile_loadd(0, bias_rows, 64);
    _tile_loadd(1, bias_rows + 256, 64);
    _tile_loadd(2, bias_rows, 64);
    _tile_loadd(3, bias_rows + 256, 64);
/* Tile numbers are spelled into the instructions, hence macros: load a pair of a tiles (4, 5) or
 * w tiles (6, 7), and add the 2 x 2 products of the a and w tiles held to the accumulators. */
#define LOAD_PAIR(t0, t1, base, o) do { \
        _tile_loadd(t0, (base) + (o), 64); \
        _tile_loadd(t1, (base) + stride + (o), 64); \
    } while (0)
#define MULTIPLY_ADD_2X2() do { \
        _tile_dpbf16ps(0, 4, 6); \
        _tile_dpbf16ps(1, 4, 7); \
        _tile_dpbf16ps(2, 5, 6); \
        _tile_dpbf16ps(3, 5, 7); \
    } while (0)
    for (int64_t o = 0; o < stride; o += TILE_ELEMS) {
        LOAD_PAIR(4, 5, ah, o);  /* a_hi with w_lo, then with w_hi; then a_lo with w_hi */
        LOAD_PAIR(6, 7, wl, o);
        MULTIPLY_ADD_2X2();
        LOAD_PAIR(6, 7, wh, o);
        MULTIPLY_ADD_2X2();
        LOAD_PAIR(4, 5, al, o);
        MULTIPLY_ADD_2X2();
    }
#undef LOAD_PAIR
#undef MULTIPLY_ADD_2X2
    int64_t r0 = mb * 32, c0 = nb * 32;
    if (r0 + 32 > g->m || c0 + 32 > g->n) {
        store_partial(g, r0, c0);
        return;
    }
    float *y = g->y + r0 * g->ldy + c0;
    _tile_stored(0, y, g->ldy * 4);
    _tile_stored(1, y + 16, g->ldy * 4);
    _tile_stored(2, y + 16 * g->ldy, g->ldy * 4);
    _tile_stored(3, y + 16 * g->ldy + 16, g->ldy * 4);
}

/* Eight tiles of 16 rows x 64 bytes. A constant in memory, not a stack struct: GCC 12's
 * _tile_loadconfig declares a read of 8 bytes only, and dropped the stores that filled a local one. */
static const tile_config TILE_CONFIG = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

KERNEL static void configure_tiles(void) { _tile_loadconfig(&TILE_CONFIG); }

KERNEL static void release_tiles(void) { _tile_release(); }

/* One unit of work: the output blocks of row group mg (MB_PER_UNIT blocks of 32 rows) and column
 * chunk nc (NB_PER_CHUNK blocks of 32 columns). */
KERNEL static void unit(const gemm_args *g, int64_t nc, int64_t mg) {
    int64_t nblocks = (g->n + 31) / 32, mblocks = (g->m + 31) / 32;
    int64_t nb0 = nc * NB_PER_CHUNK, nb1 = nb0 + NB_PER_CHUNK < nblocks ? nb0 + NB_PER_CHUNK : nblocks;
    int64_t mb0 = mg * MB_PER_UNIT, mb1 = mb0 + MB_PER_UNIT < mblocks ? mb0 + MB_PER_UNIT : mblocks;
    /* Each column block's bias repeated down 16 rows: it initialises the accumulators. */
    float bias_rows[NB_PER_CHUNK][2 * 256] __attribute__((aligned(64)));
    for (int64_t nb = nb0; nb < nb1; nb++)
        for (int j = 0; j < 32; j++) {
            int64_t col = nb * 32 + j;
            float v = (g->bias != NULL && col < g->n) ? g->bias[col] : 0.0f;
            for (int r = 0; r < 16; r++) bias_rows[nb - nb0][(j >> 4) * 256 + r * 16 + (j & 15)] = v;
        }
    for (int64_t mb = mb0; mb < mb1; mb++)
        for (int64_t nb = nb0; nb < nb1; nb++) block(g, mb, nb, bias_rows[nb - nb0]);
}

/* Work is handed out in small units to whichever thread is free (dynamic schedule), not split in
 * equal shares: on a CPU shared with the server's event loop, a thread that loses its core for a
 * while then delays only its current unit, instead of holding every other thread at the end. */
static void linear(const float *a, int64_t lda, gemm_args *g, uint16_t *ahi, uint16_t *alo, int threads) {
    int64_t tile_rows = (g->m + 31) / 32 * 2;
    int64_t chunks = ((g->n + 31) / 32 + NB_PER_CHUNK - 1) / NB_PER_CHUNK;
    int64_t groups = ((g->m + 31) / 32 + MB_PER_UNIT - 1) / MB_PER_UNIT;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(dynamic, 1)
        for (int64_t tr = 0; tr < tile_rows; tr += 2 * MB_PER_UNIT) {
            int64_t end = tr + 2 * MB_PER_UNIT < tile_rows ? tr + 2 * MB_PER_UNIT : tile_rows;
            pack_rows(a, g->m, g->k, lda, tr, end, ahi, alo);
        }
        /* the loop's implicit barrier: every row is split before any product */
        configure_tiles();
        /* chunk-major order: the threads share one chunk's w parts at a time */
        #pragma omp for schedule(dynamic, 1) nowait
        for (int64_t u = 0; u < chunks * groups; u++) unit(g, u / groups, u % groups);
        release_tiles();
    }
}
#endif /* BF16X3_BUILT */

static PyObject *py_unsupported_reason(PyObject *self, PyObject *unused) {
#ifdef BF16X3_BUILT
    static int probed = 0;
    static const char *reason = NULL;
    if (!probed) {
        reason = probe();
        probed = 1;
    }
    if (reason == NULL) Py_RETURN_NONE;
    return PyUnicode_FromString(reason);
#else
    return PyUnicode_FromString("built without the x86-64 Linux OpenMP kernels");
#endif
}

#ifdef BF16X3_BUILT
/* pack_weight and linear exist only where the kernels were built; elsewhere unsupported_reason()
 * says why, and vocos_core.bf16x3 never calls them. */
static PyObject *py_pack_weight(PyObject *self, PyObject *args) {
    unsigned long long w, hi, lo;
    long long n, k;
    if (!PyArg_ParseTuple(args, "KLLKK", &w, &n, &k, &hi, &lo)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    pack_weight((const float *)w, n, k, (uint16_t *)hi, (uint16_t *)lo);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_linear(PyObject *self, PyObject *args) {
    unsigned long long a, whi, wlo, bias, y, ahi, alo;
    long long m, k, lda, n, ldy;
    int threads;
    if (!PyArg_ParseTuple(args, "KLLLKKKLKLKKi", &a, &m, &k, &lda, &whi, &wlo, &bias, &n, &y, &ldy, &ahi,
                          &alo, &threads))
        return NULL;
    gemm_args g = {m, k, n, ldy, (const uint16_t *)ahi, (const uint16_t *)alo, (const uint16_t *)whi,
                   (const uint16_t *)wlo, (const float *)bias, (float *)y};
    Py_BEGIN_ALLOW_THREADS
    linear((const float *)a, lda, &g, (uint16_t *)ahi, (uint16_t *)alo, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#endif

static PyMethodDef methods[] = {
    {"unsupported_reason", py_unsupported_reason, METH_NOARGS,
     "None when the kernels can run here, else why not."},
#ifdef BF16X3_BUILT
    {"pack_weight", py_pack_weight, METH_VARARGS,
     "pack_weight(w, n, k, hi, lo): split a contiguous float32 (n, k) weight into tile-ordered bf16 parts."},
    {"linear", py_linear, METH_VARARGS,
     "linear(a, m, k, lda, w_hi, w_lo, bias, n, y, ldy, a_hi, a_lo, threads): y = a @ w^T + bias."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bf16x3", NULL, -1, methods};

PyMODINIT_FUNC PyInit__bf16x3(void) { return PyModule_Create(&module); }
