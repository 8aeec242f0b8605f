// The inventory moved down to store/ (the status wing shows it too; a wing may not import another).
// Kept here for the upkeep modules and tests that import it from its old place.
export { inventory, inventoryOf, type InventoryEntry } from '../store/inventory.js';
