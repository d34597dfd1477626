/*
 * hvsim's native helper: the two Unicorn hooks that must not be Python.
 *
 * Unicorn 2.1.4 cannot stop a run asynchronously without leaving RIP stale (a stop requested from
 * another thread, or by emu_start's timeout, skips synchronize_from_tb; see
 * shared/design/ref/linux-on-unicorn.md O2).  A stop requested from inside a block hook lands at a
 * block start with the PC in sync, so resuming is exact.  A Python block hook would cost ~200x; this
 * one costs one load and one compare per translation block.
 *
 *  - hvsim_block_hook: counts executed blocks (guest time, clock.py); clears the engine's "PC was
 *    set" flag, which it leaves set after a hook wrote RIP outside a block (engine.py sync_pc_flag),
 *    so that the hooks inside blocks see their instruction's RIP; stops the run before the block
 *    executes when `stop_request` is raised (by the watchdog thread or a signal handler), when the
 *    block count reaches `deadline_blocks` (the guest clock's next event), or, while `want_if` is set
 *    (an interrupt waits for the guest to enable interrupts), at the first block entered with
 *    RFLAGS.IF set.
 *    With `rep_fast` set it also runs `rep stos`/`rep movs` host-side, a page at a time (rep_string
 *    below).
 *  - hvsim_rdtsc_hook / hvsim_rdtscp_hook: answer RDTSC / RDTSCP with guest time in nanoseconds (a
 *    1 GHz TSC) instead of the engine's host-clock TSC, so the guest's time is deterministic; RDTSCP's
 *    ECX is read from the engine's own TSC_AUX field when native.py found its address.
 *  - hvsim_forget_code / hvsim_translate: called by Python, not the engine: drop translated code by
 *    guest-physical address after a host write, and walk 4-level page tables for a host read.
 *  - instruction budget: the block hook charges each block's instruction count (budget_block, with
 *    hvsim_tb_hook recording the counts as blocks are translated); hvsim_insn_hook counts executed
 *    instructions one at a time and stops before the one that would exceed `insn_limit` (installed
 *    for the last part-block of a budget, where it costs ~15x, or for a whole run as a reference).
 *  - hvsim_coverage_hook: records the start address of every executed block in a hash set
 *    (`struct hvsim_coverage`, open addressing, grown here), read once by Python at the end of the
 *    run and released with hvsim_coverage_free (installed only when coverage is asked for).
 *
 * Python owns `struct hvsim_control` (a ctypes Structure in native.py, same layout) and passes it as
 * the hook's user data, together with the address of libunicorn's uc_emu_stop, so this file needs
 * neither Unicorn's headers nor linking against it.  The module itself only publishes addresses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*uc_emu_stop_fn)(void *uc);
typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);
typedef int (*uc_reg_write_fn)(void *uc, int regid, const void *value);
typedef int (*uc_mem_read_fn)(void *uc, uint64_t address, void *bytes, uint64_t size);
typedef int (*uc_mem_write_fn)(void *uc, uint64_t address, const void *bytes, uint64_t size);
typedef int (*uc_ctl_fn)(void *uc, uint32_t control, ...);
struct uc_mem_region {             /* unicorn/unicorn.h */
    uint64_t begin;                /* inclusive */
    uint64_t end;                  /* inclusive */
    uint32_t perms;
};
typedef int (*uc_mem_regions_fn)(void *uc, struct uc_mem_region **regions, uint32_t *count);
typedef int (*uc_free_fn)(void *mem);
/* libunicorn's internal functions (exported by the x86_64 build, qemu/unicorn_common.h,
 * qemu/softmmu/memory.c, qemu/accel/tcg/translate-all.c): a guest-physical address's region, the
 * region's offset in the engine's RAM address space (ram_addr_t; ~0 for MMIO), and dropping the
 * translations of code in [start, end) of that space. */
typedef void *(*memory_mapping_fn)(void *uc, uint64_t address);
typedef uint64_t (*ram_addr_fn)(void *memory_region);
typedef void (*invalidate_phys_fn)(void *uc, uint64_t start, uint64_t end);

/* Unicorn 2.1.4's register ids (unicorn/x86.h); native.py checks them against the binding. */
enum { REG_CS = 11, REG_EFLAGS = 25, REG_RAX = 35, REG_RCX = 38, REG_RDI = 39, REG_RDX = 40, REG_RSI = 43,
       REG_CR0 = 50, REG_CR3 = 53, REG_CR4 = 54, REG_GDTR = 243, REG_MSR = 248 };
#define MSR_TSC_AUX 0xC0000103u
#define RFLAGS_IF (1u << 9)

struct uc_x86_msr {                /* unicorn/x86.h */
    uint32_t rid;
    uint64_t value;
};

#define REP_SITES 1024

struct hvsim_control {
    volatile int32_t stop_request; /* nonzero: stop at the next block start */
    int32_t stopped_by;            /* 0 none, 1 stop_request, 2 instruction limit */
    uint64_t blocks;               /* blocks entered and executed */
    uint64_t insns;                /* instructions executed (only with the instruction hook) */
    uint64_t insn_limit;           /* the instruction hook stops when insns reaches this */
    uc_emu_stop_fn emu_stop;       /* libunicorn's uc_emu_stop */
    uc_reg_read_fn reg_read;       /* libunicorn's uc_reg_read */
    uc_reg_write_fn reg_write;     /* libunicorn's uc_reg_write */
    uint64_t deadline_blocks;      /* stop before the block that would make `blocks` exceed this */
    int32_t want_if;               /* nonzero: stop at the next block entered with IF set */
    int32_t reserved;
    uint64_t ns_per_block;         /* guest time = blocks * ns_per_block + skipped_ns */
    uint64_t skipped_ns;
    uint64_t tsc_reads;            /* RDTSC/RDTSCP answered */
    uint64_t tsc_offset;           /* TSC = guest time + tsc_offset (a guest write to IA32_TSC sets it) */
    /* the rep string fast path (rep_string); off while an instruction budget counts instructions */
    int32_t rep_fast;              /* nonzero: on */
    int32_t ram_count;             /* ranges used in ram[] */
    uint64_t ram[8][2];            /* guest-physical RAM, [start, end): the only memory it stores to */
    uint64_t rep_chunks;           /* rep string chunks done host-side */
    uint64_t rep_elements;         /* elements (= blocks) they stood for */
    uc_mem_read_fn mem_read;       /* libunicorn's uc_mem_read / uc_mem_write / uc_ctl */
    uc_mem_write_fn mem_write;
    uc_ctl_fn ctl;
    uint64_t site_pc[REP_SITES];   /* direct-mapped: block addresses decoded, and what they start */
    uint8_t site_kind[REP_SITES];  /* with: SITE_NOT_REP or SITE_REP (the bytes are checked again) */
    /* the instruction budget counted per block (budget_block below) */
    int32_t count_blocks;          /* nonzero: the block hook charges each block's instruction count */
    int32_t reserved2;
    uint64_t cur_pc;               /* the block charged last: its address, size in bytes, and the */
    uint64_t cur_size;             /* instructions charged for it (corrected when it is cut short) */
    uint64_t cur_icount;
    struct tb_count *tb_cache;     /* direct-mapped (address, size) -> instruction count */
    uint64_t tb_cache_mask;
    uint64_t tb_lookups;           /* counts asked of the engine (a translation not in tb_cache) */
    uint64_t smc_restarts;         /* blocks left after a store into their own code (smc_restart) */
    /* the virtual TLB (vtlb_fill below) */
    int32_t vtlb_on;               /* VTLB_ON: the fill hook answers; VTLB_PAUSED: the engine's walker raises a
                                      fault the hook found (see below); 0: off, or handed over for good */
    int32_t vtlb_event;            /* why the last fill it refused was refused: VTLB_FAULT, VTLB_HANDOVER */
    int32_t vtlb_handover;         /* why it handed over (VTLB_WHY_*), 0 while it has not */
    int32_t vtlb_fetch;            /* the refused fill was an instruction fetch (before its block ran) */
    int32_t vtlb_probing;          /* nonzero: fills are the host's probes (uc_vmem_translate): refuse quietly */
    int32_t reserved3;
    uint8_t *vtlb_code;            /* per physical page below vtlb_pages: a fetch was granted there */
    uint8_t *vtlb_clean;           /* per page: a write granted without exec since the last TLB flush */
    uint64_t vtlb_pages;
    uint64_t vtlb_fills;           /* fills answered, faults found, TLB flushes made, pages turned code */
    uint64_t vtlb_faults;
    uint64_t vtlb_flushes;
    uint64_t vtlb_code_pages;
    volatile uint8_t *pc_was_set;  /* the engine's skip_sync_pc_on_exit (engine.py), or a zero byte */
    /* dropping translated code by physical address (hvsim_forget_code below): libunicorn's */
    uc_mem_regions_fn mem_regions; /* uc_mem_regions, uc_free, and three of its internal */
    uc_free_fn uc_free;            /* functions (x86_64 build): find_memory_mapping, */
    memory_mapping_fn memory_mapping;    /* memory_region_get_ram_addr, tb_invalidate_phys_range */
    ram_addr_fn ram_addr;
    invalidate_phys_fn invalidate_phys;
    uint64_t code_forgets;         /* ranges given to hvsim_forget_code */
    const volatile uint64_t *tsc_aux_at;   /* the engine's own IA32_TSC_AUX field (native.py), or NULL */
};

struct tb_count {
    uint64_t pc;
    uint32_t size;
    uint32_t icount;
};

struct uc_tb {                     /* unicorn/unicorn.h */
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
};

enum { STOPPED_BY_REQUEST = 1, STOPPED_BY_INSN_LIMIT = 2, STOPPED_BY_DEADLINE = 3, STOPPED_BY_IF_WINDOW = 4,
       STOPPED_BY_BUDGET_NEAR = 5, STOPPED_BY_SMC = 6 };

/* --- rep stos / rep movs host-side -------------------------------------------------------------
 *
 * The engine runs one iteration of a `rep stos`/`rep movs` per translation block (the instruction
 * jumps back to itself), so clearing a page with `rep stosq` costs 512 blocks.  When a block starts
 * at such an instruction, the block hook does as many iterations as stay inside the current page of
 * the destination (and source) at once, and leaves the last iteration of the count to the engine.
 * The result is the state the engine would reach after the same iterations:
 *  - memory, RCX, RDI, RSI as the iterations leave them, and guest time: each iteration done here
 *    counts the block the engine would have run for it, and none goes past the next clock deadline,
 *    so events and interrupts land at the same iteration as without the fast path;
 *  - only where nothing can fault: 64-bit code (CS.L, EFER.LMA), 4-level paging, DF clear, no
 *    segment or address-size prefix, the page present with the access allowed at the CPL (R/W with
 *    CR0.WP, U/S, SMAP with RFLAGS.AC) and its accessed/dirty bits already set (so no page-table
 *    store is skipped), the physical bytes in RAM, source and destination not overlapping.
 *    Anything else is left to the engine, whose iteration then faults (or sets A/D) as hardware does;
 *  - translated code on the destination is dropped (UC_CTL_TB_REMOVE_CACHE) when the destination
 *    mapping is executable at the CPL.  Not modelled: a destination mapped NX whose physical page
 *    holds code translated through another, executable mapping keeps that translation (the engine's
 *    own stores through an NX mapping also invalidate only on the first store after a TLB fill,
 *    guest-store-speed.md C1), and the walk reads the page tables as they are, not a stale TLB entry
 *    the guest has not flushed.
 */
#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000FFFFFFFFFF000ull
#define CR0_WP (1ull << 16)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)
#define MSR_EFER 0xC0000080u
#define RFLAGS_DF (1ull << 10)
#define RFLAGS_AC (1ull << 18)
#define UC_CTL_TB_REMOVE_CACHE_WRITE ((9u) | (2u << 26) | (1u << 30))   /* UC_CTL_WRITE(UC_CTL_TB_REMOVE_CACHE, 2) */
#define PAGE 4096u

struct paging {
    uint64_t cr0, cr3, cr4, efer, rflags;
    int cpl;
};

enum { ACCESS_READ, ACCESS_WRITE };

static int in_ram(const struct hvsim_control *c, uint64_t pa, uint64_t len)
{
    for (int i = 0; i < c->ram_count; i++)
        if (pa >= c->ram[i][0] && len <= c->ram[i][1] - pa && pa < c->ram[i][1])
            return 1;
    return 0;
}

/* Guest-physical address of `va` under 4-level paging, or -1 when the access could fault or would
 * set an accessed/dirty bit.  *exec says whether the mapping is executable at the CPL. */
static int walk(void *uc, struct hvsim_control *c, const struct paging *p, uint64_t va, int access,
                uint64_t *pa, int *exec)
{
    uint64_t sext = (uint64_t)((int64_t)(va << 16) >> 16);
    if (sext != va)
        return -1;                                    /* non-canonical: #GP */
    uint64_t table = p->cr3 & PTE_ADDR, entry = 0;
    int writable = 1, user = 1, nx = 0;
    for (int shift = 39; shift >= 12; shift -= 9) {
        uint64_t at = table + ((va >> shift) & 511) * 8;
        if (!in_ram(c, at, 8) || c->mem_read(uc, at, &entry, 8) != 0)
            return -1;
        if (!(entry & PTE_P) || !(entry & PTE_A))
            return -1;
        writable &= !!(entry & PTE_RW);
        user &= !!(entry & PTE_US);
        nx |= (p->efer & EFER_NXE) && (entry & PTE_NX);
        if (shift == 39 && (entry & PTE_PS))
            return -1;                                /* reserved in a PML4E */
        if (shift == 12 || (entry & PTE_PS)) {
            if (access == ACCESS_WRITE && !(entry & PTE_D))
                return -1;
            uint64_t size = 1ull << shift;
            *pa = ((entry & PTE_ADDR) & ~(size - 1)) | (va & (size - 1));
            break;
        }
        table = entry & PTE_ADDR;
    }
    if (p->cpl == 3) {
        if (!user || (access == ACCESS_WRITE && !writable))
            return -1;
    } else {
        if (access == ACCESS_WRITE && !writable && (p->cr0 & CR0_WP))
            return -1;
        if (user && (p->cr4 & CR4_SMAP) && !(p->rflags & RFLAGS_AC))
            return -1;
    }
    *exec = !nx && (p->cpl == 3 ? user : !(user && (p->cr4 & CR4_SMEP)));
    return 0;
}

/* --- the virtual TLB: the guest's page walk done here, exec withheld from pages never fetched -----
 *
 * Unicorn 2.1.4 gives every writable TLB entry of RAM its NOTDIRTY flag and clears it, after the
 * first store through the entry, only when the entry is not executable (notdirty_write), so every
 * store to a page the guest maps executable takes the engine's slow path
 * (shared/design/ref/guest-store-speed.md C1).  Identity-mapped, store-heavy code (the bzImage's
 * decompressor, early startup, EFI loaders) maps everything executable.  In the engine's
 * UC_TLB_VIRTUAL mode the TLB is filled by this hook instead of the engine's walker:
 *  - vtlb_walk walks the guest's page tables as the engine's handle_mmu_fault does (paging off,
 *    32-bit with PSE/PSE-36, PAE, 4-level; the same accessed/dirty updates, reserved-bit checks,
 *    R/W with CR0.WP, NX with EFER.NXE, SMEP/SMAP, and write access granted only once the dirty bit
 *    is set) and refuses exactly the accesses that walker faults;
 *  - the entry is granted exec only on a physical page that has been fetched from (vtlb_code).  A
 *    store through an entry without exec is fast after its first, which drops translated code in its
 *    range; an entry with exec keeps every store on the slow path, which drops translated code the
 *    store hits (self-modifying code stays exact).  When a page is first fetched from, entries made
 *    earlier that grant a store to it without exec (vtlb_clean) would let stores skip its new code:
 *    the whole TLB is flushed then;
 *  - where the access faults (#PF, or #GP for a non-canonical address), the fill is refused and the
 *    TLB handed to the engine's own walker: the engine stops its run with UC_ERR_EXCEPTION, RIP at
 *    the instruction (unicorn_fill_tlb restores it first), and `vtlb_event` is VTLB_FAULT.  The hook
 *    is given only the page, not the address the access used, so it cannot give CR2: the run loop
 *    runs the instruction again under the engine's walker, which raises the fault as usual, and
 *    turns this filler back on after one block (dropping the code translated meanwhile, so that
 *    every page with code is one this filler saw fetched).
 * It hands over for the rest of the run (VTLB_HANDOVER) wherever one walk cannot answer for every
 * access the entry will serve, or the hook cannot see the access's privilege: CPL 3 (the entries
 * there also serve the CPU's implicit supervisor accesses, which the hook cannot tell apart; rings 1
 * and 2 are a supervisor's, as ring 0), a
 * user page under SMAP with RFLAGS.AC set (same), protection keys, 5-level paging, page tables
 * outside RAM.  The engine's entries are 4 KiB; for a large page QEMU's walker also records the
 * page size so that `invlpg` anywhere in it drops all of it, which this hook cannot: the machine
 * intercepts `invlpg` (SVM), flushes the whole TLB and hands over (a guest that manages single TLB
 * entries has built its own page tables, and the engine's walker serves those as well: Linux marks
 * its data pages NX).  Not modelled, as in the engine: the A20 mask (always enabled).
 */
enum { VTLB_NONE = 0, VTLB_FAULT = 1, VTLB_HANDOVER = 2 };
enum { VTLB_ON = 1, VTLB_PAUSED = 2 };
enum { VTLB_WHY_CPL = 1, VTLB_WHY_SMAP_AC = 2, VTLB_WHY_MODE = 3, VTLB_WHY_TABLE = 4 };   /* 5: invlpg (native.py) */
#define UC_CTL_TLB_FLUSH_WRITE ((11u) | (0u << 26) | (1u << 30))     /* UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0) */
#define UC_CTL_TLB_TYPE_WRITE ((12u) | (1u << 26) | (1u << 30))      /* UC_CTL_WRITE(UC_CTL_TLB_TYPE, 1) */
#define UC_TLB_CPU 0
#define UC_MEM_WRITE_TYPE 17
#define UC_MEM_FETCH_TYPE 18
#define PROT_R 1u                                       /* uc_prot */
#define PROT_W 2u
#define PROT_X 4u
#define CR4_PSE (1ull << 4)
#define CR4_PKE (1ull << 22)
#define RFLAGS_VM (1ull << 17)
#define PG_HI_RSVD (0x000FFFFFFFFFF000ull & ~((1ull << 40) - 1))   /* bits 51:40: the engine's MAXPHYADDR is 40 */
#define PG_HI_USER 0x7FF0000000000000ull
#define PG_PAT_LARGE (1ull << 12)

struct uc_tlb_entry {              /* unicorn/unicorn.h */
    uint64_t paddr;
    uint32_t perms;
};

struct vtlb_walk {
    uint64_t pa;                   /* the physical page */
    uint32_t prot;                 /* PROT_* the entry may grant */
    int handover;                  /* VTLB_WHY_* when the hook cannot answer */
};

static int vtlb_read(void *uc, struct hvsim_control *c, uint64_t at, uint64_t *entry, int size,
                     struct vtlb_walk *w)
{
    *entry = 0;
    if (!in_ram(c, at, size) || c->mem_read(uc, at, entry, size) != 0) {
        w->handover = VTLB_WHY_TABLE;
        return -1;
    }
    return 0;
}

/* The engine's x86_stl_phys_notdirty: the low 32 bits of an entry, with the bits it sets. */
static void vtlb_set(void *uc, struct hvsim_control *c, uint64_t at, uint64_t entry)
{
    uint32_t low = (uint32_t)entry;
    c->mem_write(uc, at, &low, 4);
}

/* The engine's walker sets an entry's accessed bit on the way down (and only then writes it). */
static void vtlb_accessed(void *uc, struct hvsim_control *c, uint64_t at, uint64_t *entry)
{
    if (!(*entry & PTE_A)) {
        *entry |= PTE_A;
        vtlb_set(uc, c, at, *entry);
    }
}

/* 0: mapped (w->pa, w->prot); 1: the access faults (#PF, or #GP(0) when non-canonical); -1: hand over
 * (w->handover).
 * `access`: 0 read, 1 write, 2 fetch; supervisor (CPL 0) only. */
static int vtlb_walk(void *uc, struct hvsim_control *c, const struct paging *p, uint64_t va, int access,
                     struct vtlb_walk *w)
{
    uint64_t rsvd = PG_HI_RSVD, ptep, pte, pte_at, page_size;
    int is_write = access == 1;
    if (!(p->efer & EFER_NXE))
        rsvd |= PTE_NX;
    if (p->cr4 & CR4_PAE) {
        uint64_t pde, pde_at, pdpe, pdpe_at;
        if (p->efer & EFER_LMA) {
            int64_t sext = (int64_t)va >> 47;
            if (sext != 0 && sext != -1)
                return 1;
            uint64_t pml4e, pml4e_at = (p->cr3 & PTE_ADDR) + (((va >> 39) & 511) << 3);
            if (vtlb_read(uc, c, pml4e_at, &pml4e, 8, w) < 0)
                return -1;
            if (!(pml4e & PTE_P) || (pml4e & (rsvd | PTE_PS)))
                goto fault;
            vtlb_accessed(uc, c, pml4e_at, &pml4e);
            ptep = (PTE_NX | PTE_US | PTE_RW) & (pml4e ^ PTE_NX);
            pdpe_at = (pml4e & PTE_ADDR) + (((va >> 30) & 511) << 3);
            if (vtlb_read(uc, c, pdpe_at, &pdpe, 8, w) < 0)
                return -1;
            if (!(pdpe & PTE_P) || (pdpe & rsvd))
                goto fault;
            ptep &= pdpe ^ PTE_NX;
            vtlb_accessed(uc, c, pdpe_at, &pdpe);
            if (pdpe & PTE_PS) {
                page_size = 1ull << 30;
                pte_at = pdpe_at;
                pte = pdpe;
                goto check_protect;
            }
        } else {
            pdpe_at = (p->cr3 & ~0x1Full & 0xFFFFFFFFull) + ((va >> 27) & 0x18);
            if (vtlb_read(uc, c, pdpe_at, &pdpe, 8, w) < 0)
                return -1;
            if (!(pdpe & PTE_P))
                goto fault;
            rsvd |= PG_HI_USER;
            if (pdpe & (rsvd | PTE_NX))
                goto fault;
            ptep = PTE_NX | PTE_US | PTE_RW;
        }
        pde_at = (pdpe & PTE_ADDR) + (((va >> 21) & 511) << 3);
        if (vtlb_read(uc, c, pde_at, &pde, 8, w) < 0)
            return -1;
        if (!(pde & PTE_P) || (pde & rsvd))
            goto fault;
        ptep &= pde ^ PTE_NX;
        if (pde & PTE_PS) {
            page_size = 1ull << 21;
            pte_at = pde_at;
            pte = pde;
            goto check_protect;
        }
        vtlb_accessed(uc, c, pde_at, &pde);
        pte_at = (pde & PTE_ADDR) + (((va >> 12) & 511) << 3);
        if (vtlb_read(uc, c, pte_at, &pte, 8, w) < 0)
            return -1;
        if (!(pte & PTE_P) || (pte & rsvd))
            goto fault;
        ptep &= pte ^ PTE_NX;
        page_size = 4096;
    } else {
        uint64_t pde, pde_at = ((p->cr3 & ~0xFFFull) & 0xFFFFFFFFull) + ((va >> 20) & 0xFFC);
        if (vtlb_read(uc, c, pde_at, &pde, 4, w) < 0)
            return -1;
        if (!(pde & PTE_P))
            goto fault;
        ptep = pde | PTE_NX;
        if ((pde & PTE_PS) && (p->cr4 & CR4_PSE)) {
            page_size = 4ull << 20;
            pte_at = pde_at;
            pte = pde | ((pde & 0x1FE000ull) << (32 - 13));   /* PSE-36: bits 20:13 are address bits 39:32 */
            rsvd = 0x200000;
            goto check_protect_pse36;
        }
        vtlb_accessed(uc, c, pde_at, &pde);
        pte_at = (pde & ~0xFFFull) + ((va >> 10) & 0xFFC);
        if (vtlb_read(uc, c, pte_at, &pte, 4, w) < 0)
            return -1;
        if (!(pte & PTE_P))
            goto fault;
        ptep &= pte | PTE_NX;
        page_size = 4096;
        rsvd = 0;
    }
check_protect:
    rsvd |= (page_size - 1) & PTE_ADDR & ~PG_PAT_LARGE;
check_protect_pse36:
    if (pte & rsvd)
        goto fault;
    ptep ^= PTE_NX;
    {
        uint32_t prot = 0;
        int user_page = !!(ptep & PTE_US);
        if (user_page && (p->cr4 & CR4_SMAP)) {
            /* the entry serves MMU_KSMAP_IDX (AC clear: no data access) or MMU_KNOSMAP_IDX (AC set),
             * but the engine's implicit supervisor accesses use KSMAP whatever AC says */
            if ((p->rflags & RFLAGS_AC) && access != 2) {
                w->handover = VTLB_WHY_SMAP_AC;
                return -1;
            }
        } else {
            prot |= PROT_R;
            if ((ptep & PTE_RW) || !(p->cr0 & CR0_WP))
                prot |= PROT_W;
        }
        if (!(ptep & PTE_NX) && !((p->cr4 & CR4_SMEP) && user_page))
            prot |= PROT_X;
        uint32_t need = access == 0 ? PROT_R : access == 1 ? PROT_W : PROT_X;
        if (!(prot & need))
            goto fault;
        int dirtying = is_write && !(pte & PTE_D);
        if (!(pte & PTE_A) || dirtying) {
            pte |= PTE_A | (dirtying ? PTE_D : 0);
            vtlb_set(uc, c, pte_at, pte);
        }
        if (!(pte & PTE_D))
            prot &= ~PROT_W;                              /* write access waits for the dirty bit */
        w->pa = (pte & PTE_ADDR & ~(page_size - 1)) | (va & (page_size - 1) & ~0xFFFull);
        w->prot = prot;
        return 0;
    }
fault:
    return 1;
}

/* Refuse the fill and hand the TLB to the engine's own walker for the rest of the run. */
static bool vtlb_hand_over(void *uc, struct hvsim_control *c, int why)
{
    if (c->vtlb_probing)
        return false;
    c->vtlb_on = 0;
    c->vtlb_handover = why;
    c->vtlb_event = VTLB_HANDOVER;
    c->ctl(uc, UC_CTL_TLB_TYPE_WRITE, UC_TLB_CPU);
    return false;
}

static bool vtlb_fill(void *uc, uint64_t va, int type, struct uc_tlb_entry *e, void *user)
{
    struct hvsim_control *c = user;
    struct paging p;
    struct uc_x86_msr efer = {MSR_EFER, 0};
    uint16_t cs = 0;
    int access = type == UC_MEM_WRITE_TYPE ? 1 : type == UC_MEM_FETCH_TYPE ? 2 : 0;
    c->vtlb_fetch = access == 2;
    if (c->vtlb_on != VTLB_ON)
        return vtlb_hand_over(uc, c, c->vtlb_handover ? c->vtlb_handover : VTLB_WHY_MODE);
    c->reg_read(uc, REG_CR0, &p.cr0);
    c->reg_read(uc, REG_MSR, &efer);
    p.efer = efer.value;
    struct vtlb_walk w = {0, 0, 0};
    if (!(p.cr0 & CR0_PG)) {
        w.pa = (p.efer & EFER_LMA) ? va : (uint32_t)va;
        w.prot = PROT_R | PROT_W | PROT_X;
    } else {
        c->reg_read(uc, REG_CR3, &p.cr3);
        c->reg_read(uc, REG_CR4, &p.cr4);
        c->reg_read(uc, REG_EFLAGS, &p.rflags);
        c->reg_read(uc, REG_CS, &cs);
        if ((cs & 3) == 3 || (p.rflags & RFLAGS_VM))   /* rings 1 and 2 are supervisor, as ring 0 */
            return vtlb_hand_over(uc, c, VTLB_WHY_CPL);
        if ((p.cr4 & (CR4_PKE | CR4_LA57)) && (p.efer & EFER_LMA))
            return vtlb_hand_over(uc, c, VTLB_WHY_MODE);
        switch (vtlb_walk(uc, c, &p, va, access, &w)) {
        case 0:
            break;
        case 1:                                       /* the engine's walker raises it (see above) */
            if (c->vtlb_probing)
                return false;
            c->vtlb_faults++;
            c->vtlb_event = VTLB_FAULT;
            c->vtlb_on = VTLB_PAUSED;
            c->ctl(uc, UC_CTL_TLB_TYPE_WRITE, UC_TLB_CPU);
            return false;
        default:
            return vtlb_hand_over(uc, c, w.handover);
        }
    }
    c->vtlb_fills++;
    uint64_t page = w.pa >> 12;
    uint32_t perms = w.prot;
    if (page < c->vtlb_pages && in_ram(c, w.pa & ~0xFFFull, PAGE)) {
        if (access == 2) {
            if (!c->vtlb_code[page]) {
                c->vtlb_code[page] = 1;
                c->vtlb_code_pages++;
                if (c->vtlb_clean[page]) {
                    c->ctl(uc, UC_CTL_TLB_FLUSH_WRITE);
                    memset(c->vtlb_clean, 0, c->vtlb_pages);
                    c->vtlb_flushes++;
                }
            }
        } else if (!c->vtlb_code[page]) {
            perms &= ~PROT_X;
            if (perms & PROT_W)
                c->vtlb_clean[page] = 1;
        }
    }
    e->paddr = w.pa & ~0xFFFull;
    e->perms = perms;
    return true;
}

/* The instruction at `pc` as a rep string operation: element width, and whether it is a movs. */
static int decode_rep(const uint8_t *code, uint32_t size, int *width, int *movs)
{
    if (code[0] != 0xF3)
        return -1;
    uint8_t op = code[size - 1];
    if (size == 3 && code[1] != 0x48)                 /* REX.W alone */
        return -1;
    switch (op) {
    case 0xAA: *width = 1; *movs = 0; break;
    case 0xAB: *width = size == 3 ? 8 : 4; *movs = 0; break;
    case 0xA4: *width = 1; *movs = 1; break;
    case 0xA5: *width = size == 3 ? 8 : 4; *movs = 1; break;
    default: return -1;
    }
    if (size == 3 && *width == 1)
        return -1;                                    /* f3 48 aa: REX.W changes nothing, but rare: leave it */
    return 0;
}

static int paging_state(void *uc, struct hvsim_control *c, struct paging *p)
{
    struct uc_x86_msr efer = {MSR_EFER, 0};
    uint16_t cs = 0;
    c->reg_read(uc, REG_CR0, &p->cr0);
    c->reg_read(uc, REG_CR3, &p->cr3);
    c->reg_read(uc, REG_CR4, &p->cr4);
    c->reg_read(uc, REG_MSR, &efer);
    c->reg_read(uc, REG_EFLAGS, &p->rflags);
    c->reg_read(uc, REG_CS, &cs);
    p->efer = efer.value;
    p->cpl = cs & 3;
    if (!(p->cr0 & CR0_PG) || !(p->cr4 & CR4_PAE) || (p->cr4 & CR4_LA57) || !(p->efer & EFER_LMA) ||
        (p->rflags & RFLAGS_DF) || (cs & 4))
        return -1;
    /* 64-bit code: the L bit of CS's GDT descriptor */
    struct { uint16_t selector; uint64_t base; uint32_t limit; uint32_t flags; } gdtr = {0, 0, 0, 0};
    c->reg_read(uc, REG_GDTR, &gdtr);
    uint64_t index = cs & ~7u, pa, descriptor = 0;
    int exec;
    struct paging system = *p;
    system.cpl = 0;                                   /* descriptor reads are supervisor accesses */
    system.cr4 &= ~CR4_SMAP;
    if (index + 7 > gdtr.limit || walk(uc, c, &system, gdtr.base + index, ACCESS_READ, &pa, &exec) < 0 ||
        (pa & (PAGE - 1)) > PAGE - 8 || c->mem_read(uc, pa, &descriptor, 8) != 0)
        return -1;
    return (descriptor >> 53) & 1 ? 0 : -1;
}

/* One page's worth (or less) of elements: destination (and source) translated, checked, stored.
 * Returns the elements done, 0 when this chunk must be left to the engine. */
static uint64_t rep_chunk(void *uc, struct hvsim_control *c, const struct paging *p, int width, int movs,
                          uint64_t rdi, uint64_t rsi, uint64_t pattern, uint64_t limit)
{
    uint64_t n = (PAGE - (rdi & (PAGE - 1))) / width, dst, src, len;
    int dst_exec, exec;
    if (movs && (PAGE - (rsi & (PAGE - 1))) / width < n)
        n = (PAGE - (rsi & (PAGE - 1))) / width;
    if (limit < n)
        n = limit;
    len = n * width;
    if (n == 0 || walk(uc, c, p, rdi, ACCESS_WRITE, &dst, &dst_exec) < 0 || !in_ram(c, dst, len))
        return 0;
    uint64_t words[PAGE / 8];
    uint8_t *buffer = (uint8_t *)words;
    if (movs) {
        if (walk(uc, c, p, rsi, ACCESS_READ, &src, &exec) < 0 || !in_ram(c, src, len) ||
            (src < dst + len && dst < src + len) || c->mem_read(uc, src, buffer, len) != 0)
            return 0;
    } else if (pattern == 0) {
        memset(buffer, 0, len);
    } else {
        for (uint64_t i = 0; i < (len + 7) / 8; i++)
            words[i] = pattern;                       /* len is whole elements: the pattern repeats */
    }
    if (c->mem_write(uc, dst, buffer, len) != 0)
        return 0;
    /* While the native TLB filler is on, a page never fetched from holds no translated code; and
     * the engine's removal looks the address up as a fetch, which would make the page look like
     * code to the filler (vtlb_fill) and keep every later store to it slow. */
    if (dst_exec && !(c->vtlb_on == VTLB_ON && (dst >> 12) < c->vtlb_pages && !c->vtlb_code[dst >> 12]))
        c->ctl(uc, UC_CTL_TB_REMOVE_CACHE_WRITE, rdi, rdi + len);
    return n;
}

enum { SITE_UNKNOWN = 0, SITE_NOT_REP = 1, SITE_REP = 2 };
/* Below this many elements the checks cost more than the blocks they save. */
#define REP_MIN_ELEMENTS 64
#define REP_MAX_PAGES 64

/* Iterations of the rep string operation starting this block done here (0: none, the engine runs).
 * Not inlined: the block hook runs on every block and must stay a few instructions with no frame. */
__attribute__((noinline)) static uint64_t rep_string(void *uc, struct hvsim_control *c, uint64_t pc, uint32_t size)
{
    uint64_t slot = (pc ^ (pc >> 10)) & (REP_SITES - 1);
    int known = c->site_pc[slot] == pc ? c->site_kind[slot] : SITE_UNKNOWN;
    if (known == SITE_NOT_REP)
        return 0;
    uint64_t rcx = 0;
    c->reg_read(uc, REG_RCX, &rcx);
    if (known == SITE_REP && rcx <= REP_MIN_ELEMENTS)
        return 0;                                     /* the bytes are checked again below when it pays */
    struct paging p;
    uint8_t code[3];
    uint64_t pa_code;
    int width, movs, exec;
    if (paging_state(uc, c, &p) < 0)
        return 0;
    if ((pc & (PAGE - 1)) > PAGE - size || walk(uc, c, &p, pc, ACCESS_READ, &pa_code, &exec) < 0 ||
        c->mem_read(uc, pa_code, code, size) != 0)
        return 0;
    c->site_pc[slot] = pc;
    if (decode_rep(code, size, &width, &movs) < 0) {
        c->site_kind[slot] = SITE_NOT_REP;
        return 0;
    }
    c->site_kind[slot] = SITE_REP;
    if (rcx <= REP_MIN_ELEMENTS)
        return 0;
    uint64_t rdi = 0, rsi = 0, rax = 0, pattern = 0;
    c->reg_read(uc, REG_RDI, &rdi);
    if (movs)
        c->reg_read(uc, REG_RSI, &rsi);
    else {
        c->reg_read(uc, REG_RAX, &rax);
        pattern = width == 8 ? rax : width == 4 ? (rax & 0xFFFFFFFFu) * 0x100000001ull
                                                : (rax & 0xFFu) * 0x0101010101010101ull;
    }
    uint64_t limit = rcx - 1;                          /* the engine runs the last iteration */
    if (c->deadline_blocks - c->blocks - 1 < limit)    /* blocks < deadline_blocks here */
        limit = c->deadline_blocks - c->blocks - 1;
    uint64_t done = 0;
    for (int page = 0; page < REP_MAX_PAGES && done < limit; page++) {
        uint64_t n = rep_chunk(uc, c, &p, width, movs, rdi + done * width, rsi + done * width, pattern,
                               limit - done);
        if (n == 0)
            break;
        done += n;
        c->rep_chunks++;
    }
    if (done == 0)
        return 0;
    rcx -= done;
    rdi += done * width;
    c->reg_write(uc, REG_RCX, &rcx);
    c->reg_write(uc, REG_RDI, &rdi);
    if (movs) {
        rsi += done * width;
        c->reg_write(uc, REG_RSI, &rsi);
    }
    c->rep_elements += done;
    return done;
}

/* --- the instruction budget, a block at a time -----------------------------------------------
 *
 * The engine tells the block hook a block's address and size in bytes, not its instruction count.
 * The count comes from the translation itself: hvsim_tb_hook (UC_HOOK_EDGE_GENERATED, called by the
 * engine for every block it translates, except the very first of the engine's life) records
 * (address, size) -> instruction count, and a block not found there is asked of the engine
 * (UC_CTL_TB_REQUEST_CACHE, a lookup of the translation now in use).  A guest that rewrites its own
 * code makes the engine translate the block again, and the new translation replaces the entry.
 * The block hook charges a block's whole count when the block starts; a block that a CPU exception,
 * an intercept or a stop from a hook leaves part-way is corrected afterwards from Python (native.py,
 * NativeHooks.charge_upto), which decodes the block up to where it stopped.  When the count left is
 * smaller than the next block's, the hook stops before that block (STOPPED_BY_BUDGET_NEAR) and the run
 * loop counts the rest per instruction (hvsim_insn_hook), which stops exactly at the budget.
 * A store into its own block's code makes the engine abandon the store (before it writes), leave the
 * block and run the store again as a one-instruction block (translate-all.c,
 * tb_invalidate_phys_page_range__locked, current_tb_modified): smc_restart uncharges the rest.
 * Not modelled: two live translations of the same bytes at the same address with the same size and
 * different counts (the same code decoded in two CPU modes) share one entry.
 */
#define UC_CTL_TB_REQUEST_CACHE_RW ((8u) | (2u << 26) | (3u << 30))  /* UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2) */

/* Keyed by size too: a one-instruction restart block shares its address with a whole block. */
static struct tb_count *tb_slot(struct hvsim_control *c, uint64_t pc, uint32_t size)
{
    return &c->tb_cache[(pc ^ (pc >> 12) ^ ((uint64_t)size << 5)) & c->tb_cache_mask];
}

static void hvsim_tb_hook(void *uc, struct uc_tb *cur, struct uc_tb *prev, void *user)
{
    struct hvsim_control *c = user;
    (void)uc;
    (void)prev;
    struct tb_count *e = tb_slot(c, cur->pc, cur->size);
    e->pc = cur->pc;
    e->size = cur->size;
    e->icount = cur->icount;
}

/* A one-instruction block at `pc`, strictly inside the block charged last and ending before it: the
 * engine's restart after a store into that block's own code (see above).  The instructions after
 * `pc` in the block charged last did not run: uncharge them, counted by translating the block at `pc`
 * afresh, which ends where the block charged last ended (same bytes: the abandoned store wrote
 * nothing).  The instruction at `pc` stays charged there (begun, as the per-instruction count sees
 * it) and is charged again in this block.  1: the fresh block ends elsewhere (the last one was cut
 * short by the engine's instruction limit); stop, and the run loop decodes instead (STOPPED_BY_SMC). */
static int smc_restart(void *uc, struct hvsim_control *c, uint64_t pc)
{
    struct uc_tb tb = {0, 0, 0};
    c->tb_lookups++;
    if (c->ctl(uc, UC_CTL_TB_REQUEST_CACHE_RW, pc, &tb) != 0 || tb.pc != pc ||
        pc + tb.size != c->cur_pc + c->cur_size || tb.icount < 1 || tb.icount > c->cur_icount) {
        c->stopped_by = STOPPED_BY_SMC;
        c->emu_stop(uc);
        return 1;
    }
    c->insns -= tb.icount - 1u;
    c->cur_icount -= tb.icount - 1u;
    c->smc_restarts++;
    return 0;
}

/* Charge the block at `pc` (1: stop before it instead, the budget ends inside it). */
__attribute__((noinline)) static int budget_block(void *uc, struct hvsim_control *c, uint64_t pc, uint32_t size)
{
    struct tb_count *e = tb_slot(c, pc, size);
    int inside = c->cur_pc <= pc && pc + size < c->cur_pc + c->cur_size;
    uint64_t icount;
    if (e->pc == pc && e->size == size) {
        icount = e->icount;
    } else if (inside) {
        /* not in the table (the engine reuses a restart block it made before without telling
         * tb_hook) and not askable (the engine's lookup makes whole blocks): a block that starts
         * inside the last one and ends before it is only ever the one-instruction restart */
        icount = 1;
    } else {
        struct uc_tb tb = {0, 0, 0};
        c->tb_lookups++;
        if (c->ctl(uc, UC_CTL_TB_REQUEST_CACHE_RW, pc, &tb) != 0 || tb.pc != pc || tb.size != size) {
            c->stopped_by = STOPPED_BY_BUDGET_NEAR;   /* unknown: count the rest per instruction */
            c->emu_stop(uc);
            return 1;
        }
        e->pc = pc;
        e->size = size;
        e->icount = tb.icount;
        icount = tb.icount;
    }
    if (inside && icount == 1 && smc_restart(uc, c, pc))
        return 1;
    if (c->insn_limit - c->insns < icount) {         /* insns <= insn_limit always */
        c->stopped_by = STOPPED_BY_BUDGET_NEAR;
        c->emu_stop(uc);
        return 1;
    }
    c->insns += icount;
    c->cur_pc = pc;
    c->cur_size = size;
    c->cur_icount = icount;
    return 0;
}

/* Everything but counting the block: kept out of hvsim_block_hook so that its common path (count
 * and return) needs no stack frame, which is most of its cost at one call per block. */
__attribute__((noinline)) static void block_slow(void *uc, uint64_t address, uint32_t size, struct hvsim_control *c)
{
    *c->pc_was_set = 0;            /* at a block start the block's address is the RIP to sync to */
    if (c->stop_request) {
        c->stopped_by = STOPPED_BY_REQUEST;
        c->emu_stop(uc);
        return;
    }
    if (c->blocks >= c->deadline_blocks) {
        c->stopped_by = STOPPED_BY_DEADLINE;
        c->emu_stop(uc);
        return;
    }
    if (c->want_if) {
        uint64_t rflags = 0;
        c->reg_read(uc, REG_EFLAGS, &rflags);
        if (rflags & RFLAGS_IF) {
            c->stopped_by = STOPPED_BY_IF_WINDOW;
            c->emu_stop(uc);
            return;
        }
    }
    if (c->count_blocks && budget_block(uc, c, address, size))
        return;
    if (size - 2u < 2u && c->rep_fast)
        c->blocks += rep_string(uc, c, address, size);
    c->blocks++;
}

static void hvsim_block_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_control *c = user;
    if (__builtin_expect((c->stop_request | c->want_if | c->count_blocks | *c->pc_was_set) != 0 ||
                         c->blocks >= c->deadline_blocks ||
                         (size - 2u < 2u && c->rep_fast), 0)) {
        block_slow(uc, address, size, c);
        return;
    }
    c->blocks++;
}

static uint64_t guest_tsc(struct hvsim_control *c)
{
    return c->blocks * c->ns_per_block + c->skipped_ns + c->tsc_offset;
}

static void put_tsc(void *uc, struct hvsim_control *c, uint64_t tsc)
{
    uint64_t lo = tsc & 0xFFFFFFFFu, hi = tsc >> 32;   /* RAX/RDX zero-extended, as RDTSC does */
    c->reg_write(uc, REG_RAX, &lo);
    c->reg_write(uc, REG_RDX, &hi);
    c->tsc_reads++;
}

static uint32_t hvsim_rdtsc_hook(void *uc, void *user)
{
    struct hvsim_control *c = user;
    put_tsc(uc, c, guest_tsc(c));
    return 1;   /* skip the engine's own (host-clock) TSC */
}

static uint32_t hvsim_rdtscp_hook(void *uc, void *user)
{
    struct hvsim_control *c = user;
    struct uc_x86_msr aux = {MSR_TSC_AUX, 0};
    if (c->tsc_aux_at != NULL)
        aux.value = *c->tsc_aux_at;    /* what the read below returns, without helper_rdmsr */
    else
        c->reg_read(uc, REG_MSR, &aux);
    uint64_t rcx = aux.value & 0xFFFFFFFFu;
    put_tsc(uc, c, guest_tsc(c));
    c->reg_write(uc, REG_RCX, &rcx);
    return 1;
}

/* --- host writes to guest memory ----------------------------------------------------------------
 *
 * The engine does not see the host's stores to guest memory (uc_mem_write: Unicorn's
 * invalidate_and_set_dirty is empty), so code it translated there would run again as it was.
 * hvsim_forget_code drops the translations of code in guest-physical [start, end), whatever linear
 * address they were fetched through: the engine keys its translations by RAM address (ram_addr_t),
 * which for a mapped region is the region's offset plus the distance from its start.  Ranges of no
 * region, and MMIO regions, have no translations.  0, or -1 when the region list is unavailable.
 */
#define RAM_ADDR_INVALID (~(uint64_t)0)

static int hvsim_forget_code(void *uc, struct hvsim_control *c, uint64_t start, uint64_t end)
{
    struct uc_mem_region *regions = NULL;
    uint32_t count = 0;
    if (start >= end)
        return 0;
    if (c->mem_regions(uc, &regions, &count) != 0)
        return -1;
    c->code_forgets++;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t begin = regions[i].begin, last = regions[i].end;
        if (last < start || begin >= end)
            continue;
        void *mr = c->memory_mapping(uc, begin);
        if (mr == NULL)
            continue;
        uint64_t base = c->ram_addr(mr);
        if (base == RAM_ADDR_INVALID)
            continue;
        uint64_t lo = start > begin ? start : begin;
        uint64_t hi = end - 1 < last ? end - 1 : last;
        c->invalidate_phys(uc, base + (lo - begin), base + (hi - begin) + 1);
    }
    c->uc_free(regions);
    return 0;
}

/* --- the host's reads of guest-virtual memory ----------------------------------------------------
 *
 * hvsim_translate is VirtualMemory.translate (memory.py) for 4-level paging, the mode of every
 * hypercall argument a 64-bit guest passes: with CR0.PG and EFER.LMA set and `va` canonical, the
 * four levels from CR3 (a PS bit ends the walk at levels 3 and 2), every entry present and read
 * from inside `w->ranges` (the bounds-checked accessor's, so never a device's MMIO).  No accessed
 * bit is set and no permission checked, as there.  0 and *pa on success; nonzero for anything else
 * (another paging mode, a fault), and Python walks again to give the same answer or error.
 */
#define WALK_RANGES 16

struct hvsim_walker {
    uc_reg_read_fn reg_read;
    uc_mem_read_fn mem_read;
    int32_t count;                 /* ranges used */
    int32_t reserved;
    uint64_t ranges[WALK_RANGES][2];   /* [start, end), the accessor's regions */
};

static int walker_read(void *uc, const struct hvsim_walker *w, uint64_t at, uint64_t *entry)
{
    for (int i = 0; i < w->count; i++)
        if (at >= w->ranges[i][0] && at < w->ranges[i][1] && w->ranges[i][1] - at >= 8)
            return w->mem_read(uc, at, entry, 8);
    return -1;
}

static int hvsim_translate(void *uc, const struct hvsim_walker *w, uint64_t va, uint64_t *pa)
{
    uint64_t cr0 = 0, cr3 = 0, entry = 0;
    struct uc_x86_msr efer = {MSR_EFER, 0};
    if (w->reg_read(uc, REG_CR0, &cr0) != 0 || !(cr0 & CR0_PG))
        return 1;
    if (w->reg_read(uc, REG_MSR, &efer) != 0 || !(efer.value & EFER_LMA))
        return 1;
    if ((uint64_t)((int64_t)(va << 16) >> 16) != va)
        return 1;
    if (w->reg_read(uc, REG_CR3, &cr3) != 0)
        return 1;
    uint64_t table = cr3 & PTE_ADDR;
    for (int shift = 39; shift >= 12; shift -= 9) {
        if (walker_read(uc, w, table + ((va >> shift) & 511) * 8, &entry) != 0 || !(entry & PTE_P))
            return 1;
        if ((shift == 30 || shift == 21) && (entry & PTE_PS)) {
            uint64_t mask = (1ull << shift) - 1;
            *pa = (entry & PTE_ADDR & ~mask) | (va & mask);
            return 0;
        }
        table = entry & PTE_ADDR;
    }
    *pa = table | (va & 0xFFF);
    return 0;
}

static void hvsim_insn_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_control *c = user;
    (void)address;
    (void)size;
    if (c->insns >= c->insn_limit) {
        c->stopped_by = STOPPED_BY_INSN_LIMIT;
        c->emu_stop(uc);
        return;
    }
    c->insns++;
}

/* Block start addresses seen; 0 marks an empty slot, so address 0 has its own flag. */
struct hvsim_coverage {
    uint64_t *slots;
    uint64_t capacity; /* a power of two, or 0 before the first block */
    uint64_t count;    /* distinct addresses in slots */
    int32_t has_zero;  /* a block started at address 0 */
    int32_t failed;    /* an allocation failed: the set is incomplete */
};

static uint64_t coverage_slot(uint64_t address, uint64_t mask)
{
    return ((address ^ (address >> 29)) * 0x9E3779B97F4A7C15ull >> 17) & mask;
}

static void coverage_insert(uint64_t *slots, uint64_t mask, uint64_t address)
{
    uint64_t i = coverage_slot(address, mask);
    while (slots[i] != 0 && slots[i] != address)
        i = (i + 1) & mask;
    slots[i] = address;
}

static int coverage_grow(struct hvsim_coverage *c)
{
    uint64_t capacity = c->capacity ? c->capacity * 2 : 1 << 14;
    uint64_t *slots = calloc(capacity, sizeof(uint64_t));
    if (slots == NULL)
        return -1;
    for (uint64_t i = 0; i < c->capacity; i++)
        if (c->slots[i] != 0)
            coverage_insert(slots, capacity - 1, c->slots[i]);
    free(c->slots);
    c->slots = slots;
    c->capacity = capacity;
    return 0;
}

static void hvsim_coverage_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_coverage *c = user;
    (void)uc;
    (void)size;
    if (address == 0) {
        c->has_zero = 1;
        return;
    }
    if (c->capacity == 0 && coverage_grow(c) < 0) {
        c->failed = 1;
        return;
    }
    uint64_t mask = c->capacity - 1, i = coverage_slot(address, mask);
    while (c->slots[i] != 0) {
        if (c->slots[i] == address)
            return;
        i = (i + 1) & mask;
    }
    c->slots[i] = address;
    if (++c->count * 2 > c->capacity && coverage_grow(c) < 0)
        c->failed = 1;
}

static void hvsim_coverage_free(struct hvsim_coverage *c)
{
    free(c->slots);
    c->slots = NULL;
    c->capacity = 0;
    c->count = 0;
}

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "hvsim.core._native",
    "Addresses of hvsim's native Unicorn hooks (see _native.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "block_hook", PyLong_FromVoidPtr((void *)hvsim_block_hook)) < 0 ||
        PyModule_AddObject(m, "insn_hook", PyLong_FromVoidPtr((void *)hvsim_insn_hook)) < 0 ||
        PyModule_AddObject(m, "tb_hook", PyLong_FromVoidPtr((void *)hvsim_tb_hook)) < 0 ||
        PyModule_AddIntConstant(m, "CTL_TB_REQUEST_CACHE_RW", (long)UC_CTL_TB_REQUEST_CACHE_RW) < 0 ||
        PyModule_AddIntConstant(m, "tb_count_size", (long)sizeof(struct tb_count)) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_BUDGET_NEAR", STOPPED_BY_BUDGET_NEAR) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_SMC", STOPPED_BY_SMC) < 0 ||
        PyModule_AddObject(m, "rdtsc_hook", PyLong_FromVoidPtr((void *)hvsim_rdtsc_hook)) < 0 ||
        PyModule_AddObject(m, "rdtscp_hook", PyLong_FromVoidPtr((void *)hvsim_rdtscp_hook)) < 0 ||
        PyModule_AddObject(m, "forget_code", PyLong_FromVoidPtr((void *)hvsim_forget_code)) < 0 ||
        PyModule_AddObject(m, "translate", PyLong_FromVoidPtr((void *)hvsim_translate)) < 0 ||
        PyModule_AddIntConstant(m, "walker_size", (long)sizeof(struct hvsim_walker)) < 0 ||
        PyModule_AddIntConstant(m, "WALK_RANGES", WALK_RANGES) < 0 ||
        PyModule_AddIntConstant(m, "REG_EFLAGS", REG_EFLAGS) < 0 ||
        PyModule_AddIntConstant(m, "REG_RAX", REG_RAX) < 0 ||
        PyModule_AddIntConstant(m, "REG_RCX", REG_RCX) < 0 ||
        PyModule_AddIntConstant(m, "REG_RDX", REG_RDX) < 0 ||
        PyModule_AddIntConstant(m, "REG_MSR", REG_MSR) < 0 ||
        PyModule_AddIntConstant(m, "REG_CS", REG_CS) < 0 ||
        PyModule_AddIntConstant(m, "REG_RDI", REG_RDI) < 0 ||
        PyModule_AddIntConstant(m, "REG_RSI", REG_RSI) < 0 ||
        PyModule_AddIntConstant(m, "REG_CR0", REG_CR0) < 0 ||
        PyModule_AddIntConstant(m, "REG_CR3", REG_CR3) < 0 ||
        PyModule_AddIntConstant(m, "REG_CR4", REG_CR4) < 0 ||
        PyModule_AddIntConstant(m, "REG_GDTR", REG_GDTR) < 0 ||
        PyModule_AddIntConstant(m, "CTL_TB_REMOVE_CACHE_WRITE", UC_CTL_TB_REMOVE_CACHE_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_DEADLINE", STOPPED_BY_DEADLINE) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_IF_WINDOW", STOPPED_BY_IF_WINDOW) < 0 ||
        PyModule_AddObject(m, "coverage_hook", PyLong_FromVoidPtr((void *)hvsim_coverage_hook)) < 0 ||
        PyModule_AddObject(m, "coverage_free", PyLong_FromVoidPtr((void *)hvsim_coverage_free)) < 0 ||
        PyModule_AddIntConstant(m, "coverage_size", (long)sizeof(struct hvsim_coverage)) < 0 ||
        PyModule_AddIntConstant(m, "control_size", (long)sizeof(struct hvsim_control)) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_REQUEST", STOPPED_BY_REQUEST) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_INSN_LIMIT", STOPPED_BY_INSN_LIMIT) < 0 ||
        PyModule_AddObject(m, "tlb_fill_hook", PyLong_FromVoidPtr((void *)vtlb_fill)) < 0 ||
        PyModule_AddIntConstant(m, "VTLB_FAULT", VTLB_FAULT) < 0 ||
        PyModule_AddIntConstant(m, "VTLB_HANDOVER", VTLB_HANDOVER) < 0 ||
        PyModule_AddIntConstant(m, "VTLB_ON", VTLB_ON) < 0 ||
        PyModule_AddIntConstant(m, "VTLB_PAUSED", VTLB_PAUSED) < 0 ||
        PyModule_AddIntConstant(m, "CTL_TLB_FLUSH_WRITE", (long)UC_CTL_TLB_FLUSH_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "CTL_TLB_TYPE_WRITE", (long)UC_CTL_TLB_TYPE_WRITE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
