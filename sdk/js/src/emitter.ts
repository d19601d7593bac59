/** A small typed event emitter: the same code in browsers and Node, no DOM event types. */
export type Listener<T> = (event: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(listener as Listener<never>);
  }

  /** Resolves with the next event of `type`. */
  once<K extends keyof Events>(type: K): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(type, (event) => {
        off();
        resolve(event);
      });
    });
  }

  protected emit<K extends keyof Events>(type: K, event: Events[K]): void {
    for (const listener of [...(this.listeners.get(type) ?? [])]) {
      try {
        (listener as Listener<Events[K]>)(event);
      } catch (error) {
        // A throwing listener must not break the session's message loop.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
