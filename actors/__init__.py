"""Everything that touches Ray: the faulty network actor, replica actors, storage, cluster builders."""
