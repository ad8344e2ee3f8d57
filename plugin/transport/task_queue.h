// An unbounded single-producer / single-consumer FIFO of small blocks: a data socket's tasks.
// A comm may have 32 requests x 8 sub-requests in flight, each one task per socket, but NCCL
// keeps 8 in flight: a fixed ring sized for the worst case cost every data socket ~24 KiB per
// queue whether it carried anything or not (issue 19: thousands of comms per process). Here a
// queue holds one block until it is deeper than a block, and the consumer hands a drained block
// back to the producer, so the steady state allocates nothing.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace devmem {

template <typename T, size_t kBlockSize = 8>
class TaskQueue {
 public:
  TaskQueue() : head_block_(new Block), tail_block_(head_block_) {}
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;
  ~TaskQueue() {
    for (Block* b = head_block_; b != nullptr;) {
      Block* next = b->next.load(std::memory_order_relaxed);
      delete b;
      b = next;
    }
    delete spare_.load(std::memory_order_relaxed);
  }

  // Producer. Never fails (it allocates a block only when the queue is deeper than ever).
  void Push(const T& value) {
    if (tail_index_ == kBlockSize) {
      Block* block = spare_.exchange(nullptr, std::memory_order_acquire);
      if (block == nullptr) {
        block = new Block;
      } else {
        block->next.store(nullptr, std::memory_order_relaxed);
      }
      tail_block_->next.store(block, std::memory_order_release);
      tail_block_ = block;
      tail_index_ = 0;
    }
    tail_block_->slots[tail_index_++] = value;
    // seq_cst pairs with the consumer's "nothing left, I stop looking" check (the progress
    // engine's scheduled flag, plugin/transport/progress_engine.cc).
    pushed_.store(pushed_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
  }

  // Consumer: the oldest element, or nullptr when empty.
  T* Front() {
    if (popped_.load(std::memory_order_relaxed) == pushed_.load(std::memory_order_seq_cst)) {
      return nullptr;
    }
    if (head_index_ == kBlockSize) {
      // The producer linked the next block before it published the element in it.
      Block* next = head_block_->next.load(std::memory_order_acquire);
      Block* drained = head_block_;
      head_block_ = next;
      head_index_ = 0;
      Block* expected = nullptr;
      if (!spare_.compare_exchange_strong(expected, drained, std::memory_order_release)) {
        delete drained;
      }
    }
    return &head_block_->slots[head_index_];
  }
  // Consumer: drops the element Front() returned.
  void Pop() {
    ++head_index_;
    popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // Either side: nothing queued. Acquire: a producer that sees the queue empty also sees what
  // the consumer wrote before its last Pop (e.g. a socket's single-writer counters).
  bool Empty() const {
    return popped_.load(std::memory_order_acquire) == pushed_.load(std::memory_order_seq_cst);
  }

 private:
  struct Block {
    std::array<T, kBlockSize> slots{};
    std::atomic<Block*> next{nullptr};
  };
  // Consumer's end.
  Block* head_block_;
  size_t head_index_ = 0;
  alignas(64) std::atomic<uint64_t> popped_{0};
  // Producer's end.
  alignas(64) Block* tail_block_;
  size_t tail_index_ = 0;
  std::atomic<uint64_t> pushed_{0};
  // One drained block on its way back to the producer.
  std::atomic<Block*> spare_{nullptr};
};

}  // namespace devmem
